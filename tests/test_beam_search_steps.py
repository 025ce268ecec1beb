"""fairseq2's beam search, one step at a time (`models/generation_sonar_text.py`); the whole search is compared with
fairseq2 itself in tests/test_parity_sonar.py."""

import pytest
import torch
from torch import nn

from sonar_llm_hf.models.generation_sonar_text import (
    Fairseq2BeamSearch,
    SonarDecodingSettings,
    TokenConstraints,
    chunked_top_log_probs,
    select_candidates,
)

EOS = 2


class ChunkedHead(nn.Module):
    """A vocabulary projection scored in chunks of `chunk` rows, as the beam search scores SONAR's 256k rows."""

    def __init__(self, weight: torch.Tensor, chunk: int):
        super().__init__()
        self.weight, self.chunk = weight, chunk

    def vocab_chunks(self):
        return (
            (s, lambda h, w=self.weight[s : s + self.chunk]: h @ w.T) for s in range(0, len(self.weight), self.chunk)
        )


def test_chunked_scores_equal_log_softmax_then_topk_over_the_whole_vocabulary():
    generator = torch.Generator().manual_seed(0)
    weight, hidden = torch.randn(50, 8, generator=generator), torch.randn(3, 8, generator=generator)
    constraints = TokenConstraints([1, 40, 41, 42], unk_id=3, unk_penalty=0.5)
    scores, ids = chunked_top_log_probs(hidden, ChunkedHead(weight, chunk=7), k=6, constraints=constraints)
    full = torch.log_softmax(hidden @ weight.T, dim=-1)  # normalised before the constraints, as fairseq2
    constraints.apply(full, 0)
    expected_scores, expected_ids = full.topk(6, dim=-1)
    assert torch.equal(ids, expected_ids)
    # a log-sum-exp over 8 chunks instead of one: a few fp32 ulps of values of order 1-10
    torch.testing.assert_close(scores, expected_scores, rtol=0, atol=1e-5)
    forced_scores, forced_ids = chunked_top_log_probs(
        hidden, ChunkedHead(weight, 7), k=6, constraints=constraints, forced=EOS
    )
    assert forced_ids.tolist() == [[EOS]] * 3
    torch.testing.assert_close(
        forced_scores, torch.log_softmax(hidden @ weight.T, -1)[:, EOS : EOS + 1], rtol=0, atol=1e-5
    )


def test_constraints_block_runs_across_chunk_boundaries_and_penalise_unk():
    constraints = TokenConstraints([1, 5, 6, 7, 8], unk_id=3, unk_penalty=2.0)
    assert constraints.runs == [(1, 2), (5, 9)]
    chunk = torch.zeros(2, 4)  # ids 4..7
    constraints.apply(chunk, start=4)
    assert torch.isinf(chunk[:, 1:]).all() and (chunk[:, 0] == 0).all()
    chunk = torch.zeros(2, 4)  # ids 0..3
    constraints.apply(chunk, start=0)
    assert chunk[0].tolist() == [0.0, -torch.inf, 0.0, -2.0]


def test_selection_ends_hypotheses_on_eos_only_among_the_first_beam_candidates():
    finished = []

    def on_eos(row, score):
        finished.append((row, float(score)))
        return False

    # one input with 2 beams (rows 4 and 5 of the batch), candidates (score, token) per row
    scores = torch.tensor([[-1.0, -2.0, -6.0], [-1.5, -3.0, -7.0]])
    tokens = torch.tensor([[EOS, 10, 11], [12, 13, EOS]])
    selection = select_candidates(scores, tokens, offset=4, beam_size=2, eos=EOS, on_eos=on_eos)
    assert finished == [(4, -1.0)]  # the best candidate ends; row 5's EOS (6th best) is never accepted
    assert selection.rows.tolist() == [5, 4] and selection.tokens.tolist() == [12, 10]
    assert selection.scores.tolist() == [-1.5, -2.0] and not selection.closed


def test_selection_closes_an_input_once_it_has_beam_hypotheses():
    scores, tokens = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[EOS, 10, 11]])
    selection = select_candidates(scores, tokens, offset=0, beam_size=2, eos=EOS, on_eos=lambda row, score: True)
    assert selection.closed and len(selection.rows) == 0


def test_prefill_scores_the_language_token_and_finish_divides_by_scored_tokens(tiny_sonar_decoder, tiny_sonar_encoder):
    decoder = tiny_sonar_decoder
    embeddings = tiny_sonar_encoder.encode(["The cat sat on the mat.", "Hello world."])
    prompt = decoder.decoder_prompt(2, "eng_Latn")
    search = Fairseq2BeamSearch(decoder, embeddings, prompt, beam_size=2, max_length=8)
    search.prefill()
    with torch.no_grad():
        logits = decoder(sentence_embeddings=embeddings, decoder_input_ids=prompt[:, :1]).logits[:, 0]
    lang_score = torch.log_softmax(logits, -1).gather(1, prompt[:, 1:2]).squeeze(1)
    torch.testing.assert_close(search.step_scores[:, 1], lang_score, rtol=0, atol=1e-6)
    search.seqs[1, 2:4] = torch.tensor([20, 21])
    assert not search.finish(step=4, row=1, score=torch.tensor(-8.0))
    score, tokens = search.finished[1][0]
    assert float(score) == -2.0 and tokens == [20, 21, EOS]  # lang + 2 pieces + </s> = 4 scored tokens


def test_advance_keeps_surviving_rows_and_records_the_step(tiny_sonar_decoder, tiny_sonar_encoder):
    decoder = tiny_sonar_decoder
    embeddings = tiny_sonar_encoder.encode(["The cat sat on the mat.", "Hello world."])
    search = Fairseq2BeamSearch(decoder, embeddings, decoder.decoder_prompt(2, "eng_Latn"), beam_size=2, max_length=8)
    search.prefill()
    scores, tokens = search.row_candidates(2)
    assert scores.shape == tokens.shape == (2, 4)  # each row's best 2 x beam
    selections = [
        select_candidates(scores[i : i + 1], tokens[i : i + 1], i, 2, EOS, lambda r, s: False) for i in (0, 1)
    ]
    search.advance(2, selections)
    assert search.beam_sizes == [2, 2] and search.input_index.tolist() == [0, 0, 1, 1]
    assert search.seqs[:, 2].tolist() == torch.cat([s.tokens for s in selections]).tolist()


def test_decoding_settings_take_overrides_and_name_bad_options():
    base = SonarDecodingSettings(num_beams=3)
    settings = SonarDecodingSettings.build(base, max_length=20, top_p=0.9, beam_search="transformers")
    assert (settings.num_beams, settings.max_length, settings.generate_kwargs) == (3, 20, {"top_p": 0.9})
    assert base.max_length == 256 and base.generate_kwargs == {}  # the caller's settings are not changed
    settings.validate(positions=512)
    with pytest.raises(TypeError, match="top_p"):
        SonarDecodingSettings.build(top_p=0.9).validate(positions=512)  # fairseq2's search has no top_p
    with pytest.raises(ValueError, match="beam_search"):
        SonarDecodingSettings.build(beam_search="hf").validate(positions=512)
    with pytest.raises(ValueError, match="num_beams"):
        SonarDecodingSettings.build(num_beams=0).validate(positions=512)
