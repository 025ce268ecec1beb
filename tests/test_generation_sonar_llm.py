"""Sentence-level generate: parity with the reference loop, cache/batching invariance, stopping, options, errors."""

import pytest
import torch
from transformers import GenerationConfig

from sonar_llm_hf import SentenceStreamer, SonarLLMForCausalSentenceModeling
from sonar_llm_hf.testing.reference import reference_generate

PROMPTS = [
    ["The cat sat on the mat.", "It was happy."],
    ["A dog ran in the park.", "The sun was warm.", "The dog found a ball."],
    ["Tom had a red car."],
]
FAST = dict(max_length=12, max_new_sentences=3)


def make_end_predictable(model, cosine_target=None):
    """Make the backbone predict enc("End of sequence.") at every position (sentence_out_proj = constant)."""
    eos = model.sonar_encoder.encode([model.config.eos_sentence])[0]
    with torch.no_grad():
        model.sentence_out_proj.weight.zero_()
        model.sentence_out_proj.bias.copy_(eos)
    return eos


@pytest.mark.parametrize("decoding", [dict(num_beams=1), dict(num_beams=5)])
def test_equals_the_reference_loop(sonar_llm, decoding):
    """Greedy and beam: same sentences as the reference (one prompt, full recompute, re-encode, cosine stop)."""
    ours = sonar_llm.generate(PROMPTS, max_sentences=4, max_length=12, **decoding)
    for i, prompt in enumerate(PROMPTS):
        expected = reference_generate(sonar_llm, prompt, max_sentences=4, max_length=12, **decoding)
        assert ours.sentences[i] == expected
        assert len(prompt) + len(ours.sentences[i]) == 5  # the reference's `while len(sents) <= 4`


def test_cache_and_batching_do_not_change_outputs(sonar_llm):
    batched = sonar_llm.generate(PROMPTS, num_beams=1, **FAST)
    no_cache = sonar_llm.generate(PROMPTS, num_beams=1, use_cache=False, **FAST)
    assert batched.sentences == no_cache.sentences
    for i, prompt in enumerate(PROMPTS):
        alone = sonar_llm.generate([prompt], num_beams=1, **FAST)
        assert alone.sentences[0] == batched.sentences[i]
        torch.testing.assert_close(alone.predicted_embeddings[0], batched.predicted_embeddings[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(
            no_cache.predicted_embeddings[i], batched.predicted_embeddings[i], atol=1e-5, rtol=0
        )


def test_output_structure(sonar_llm):
    out = sonar_llm.generate(PROMPTS, num_beams=1, **FAST)
    assert len(out.sentences) == len(out.texts) == len(out.embeddings) == len(PROMPTS)
    for i in range(len(PROMPTS)):
        assert len(out.sentences[i]) == 3 and out.texts[i] == " ".join(out.sentences[i])
        assert out.embeddings[i].shape == (3, sonar_llm.config.embed_dim)
        assert out.full_texts[i] == " ".join(PROMPTS[i] + out.sentences[i])
        assert out.finished[i] is False


def test_string_prompts_are_split_offline(sonar_llm):
    text = "The cat sat on the mat. It was happy."
    from_text = sonar_llm.generate(text, num_beams=1, **FAST)
    from_list = sonar_llm.generate([PROMPTS[0]], num_beams=1, **FAST)
    assert from_text.prompt_sentences == [PROMPTS[0]]
    assert from_text.sentences == from_list.sentences


def test_embedding_prompts(sonar_llm):
    embedded = sonar_llm.sonar_encoder.encode(PROMPTS[0])
    from_embeddings = sonar_llm.generate(embedded, num_beams=1, **FAST)
    from_text = sonar_llm.generate([PROMPTS[0]], num_beams=1, **FAST)
    assert from_embeddings.sentences == from_text.sentences
    ragged = sonar_llm.generate([embedded, embedded[:1]], num_beams=1, **FAST)
    assert ragged.sentences[0] == from_text.sentences[0]


def test_stops_on_the_end_sentence(sonar_llm):
    make_end_predictable(sonar_llm)
    out = sonar_llm.generate(PROMPTS, eos_check="predicted", num_beams=1, max_length=12)
    assert out.sentences == [[], [], []] and out.finished == [True, True, True]
    # Re-encoding checks the decoded text instead; a threshold of -1 makes every sentence an end.
    out = sonar_llm.generate(PROMPTS, eos_threshold=-1.0, num_beams=1, max_length=12)
    assert out.finished == [True, True, True]


def test_sentence_limits(sonar_llm):
    out = sonar_llm.generate(PROMPTS, num_beams=1, max_length=8, max_sentences=3)
    assert [len(p) + len(s) for p, s in zip(PROMPTS, out.sentences)] == [4, 4, 4]
    out = sonar_llm.generate(PROMPTS, num_beams=1, max_length=8, max_new_sentences=1)
    assert [len(s) for s in out.sentences] == [1, 1, 1]


def test_feedback_of_the_prediction(sonar_llm):
    out = sonar_llm.generate(PROMPTS[:1], num_beams=1, feedback="predicted", **FAST)
    torch.testing.assert_close(out.embeddings[0], out.predicted_embeddings[0])
    reencoded = sonar_llm.generate(PROMPTS[:1], num_beams=1, **FAST)
    assert not torch.allclose(reencoded.embeddings[0], reencoded.predicted_embeddings[0])


def test_streamer_receives_sentences_in_order(sonar_llm):
    class Collect(SentenceStreamer):
        def __init__(self):
            self.items, self.ended = [], False

        def put(self, value):
            self.items.extend(value)

        def end(self):
            self.ended = True

    streamer = Collect()
    out = sonar_llm.generate(PROMPTS, num_beams=1, streamer=streamer, **FAST)
    assert streamer.ended
    for i in range(len(PROMPTS)):
        assert [s for j, s in streamer.items if j == i] == out.sentences[i]


def test_sampling_is_seeded(sonar_llm):
    sample = dict(do_sample=True, temperature=1.5, top_p=1.0, **FAST)
    first = sonar_llm.generate(PROMPTS, seed=3, **sample)
    again = sonar_llm.generate(PROMPTS, seed=3, **sample)
    other = sonar_llm.generate(PROMPTS, seed=4, **sample)
    assert first.sentences == again.sentences
    assert first.sentences != other.sentences


def test_target_language_prompts_the_decoder(sonar_llm):
    seen = []
    decode = sonar_llm.sonar_decoder.decode

    def recording_decode(*args, **kwargs):
        seen.append(kwargs["lang"])
        return decode(*args, **kwargs)

    sonar_llm.sonar_decoder.decode = recording_decode
    sonar_llm.generate(PROMPTS[:1], lang="fra_Latn", target_lang="deu_Latn", num_beams=1, **FAST)
    assert seen and set(seen) == {"deu_Latn"}


def test_generation_settings_round_trip(sonar_llm, tmp_path):
    sonar_llm.generation_config.eos_threshold = 0.9
    sonar_llm.generation_config.max_sentences = 12
    sonar_llm.save_pretrained(tmp_path)
    sonar_llm.tokenizer.save_pretrained(tmp_path)
    loaded = SonarLLMForCausalSentenceModeling.from_pretrained(tmp_path)
    assert loaded.generation_config.eos_threshold == 0.9 and loaded.generation_config.max_sentences == 12
    config = GenerationConfig.from_pretrained(tmp_path)
    assert config.feedback == "reencoded"
    # A passed config merges with the saved one (issue 11 item 2): the saved threshold 0.9 applies unless it is set.
    out = loaded.generate([PROMPTS[0]], num_beams=1, max_length=8,
                          generation_config=GenerationConfig(max_sentences=2, eos_threshold=0.98))  # fmt: skip
    assert len(out.sentences[0]) == 1
    merged = loaded.generate(
        [PROMPTS[0]], num_beams=1, max_length=8, generation_config=GenerationConfig(max_sentences=2)
    )
    explicit = loaded.generate([PROMPTS[0]], num_beams=1, max_length=8, max_sentences=2, eos_threshold=0.9)
    assert merged.sentences == explicit.sentences and merged.finished == explicit.finished


@pytest.mark.parametrize(
    "prompts, options, error, message",
    [
        ("", {}, ValueError, "empty"),
        ([], {}, ValueError, "empty"),
        (["  "], {}, ValueError, "empty"),
        ([["ok."], 3], {}, TypeError, "Prompt 1"),
        (torch.zeros(1, 2, 7), {}, ValueError, "width"),
        ("Hello there.", {"eos_threshold": 1.5}, ValueError, r"\[-1, 1\]"),
        ("Hello there.", {"feedback": "mean"}, ValueError, "feedback"),
        ("Hello there.", {"beam": 3}, TypeError, "Unknown generation option"),
        ("Hello there.", {"lang": "english"}, ValueError, "eng_Latn"),
    ],
)
def test_bad_generation_input(sonar_llm, prompts, options, error, message):
    with pytest.raises(error, match=message):
        sonar_llm.generate(prompts, **options)


def test_prompt_longer_than_the_backbone_positions(sonar_llm):
    sonar_llm.config.llama_config.max_position_embeddings = 2
    with pytest.raises(ValueError, match="positions"):
        sonar_llm.generate([PROMPTS[1]])
