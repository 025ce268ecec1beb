"""SonarTextEncoder / SonarTextDecoder behaviour on tiny real models (parity with fairseq2 is in test_parity_sonar)."""

import copy
import warnings

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from sonar_llm_hf import SonarTextDecoder, SonarTextEncoder
from sonar_llm_hf.models.modeling_sonar_text import masked_mean_pool

SENTENCES = ["The cat sat on the mat.", "Hello!", "A much longer sentence about a dog that ran in the park all day."]


def test_pooler_output_is_the_masked_mean(tiny_sonar_encoder):
    tok = tiny_sonar_encoder.tokenizer
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    out = tiny_sonar_encoder(batch["input_ids"], batch["attention_mask"])
    assert out.pooler_output.shape == (3, tiny_sonar_encoder.config.d_model)
    assert out.last_hidden_state.shape[:2] == batch["input_ids"].shape
    n = int(batch["attention_mask"][1].sum())
    torch.testing.assert_close(out.pooler_output[1], out.last_hidden_state[1, :n].mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(masked_mean_pool(out.last_hidden_state, batch["attention_mask"]), out.pooler_output)


def test_encode_is_order_and_batch_invariant(tiny_sonar_encoder):
    alone = torch.stack([tiny_sonar_encoder.encode([s])[0] for s in SENTENCES])
    for batch_size in (1, 2, 32):
        together = tiny_sonar_encoder.encode(SENTENCES, batch_size=batch_size)
        torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)


def test_language_changes_the_embedding(tiny_sonar_encoder):
    eng = tiny_sonar_encoder.encode(SENTENCES[:1], lang="eng_Latn")
    fra = tiny_sonar_encoder.encode(SENTENCES[:1], lang="fra_Latn")
    assert not torch.allclose(eng, fra)


def test_overlong_text_is_truncated_keeping_the_end_token(tiny_sonar_encoder):
    long_text = " ".join(["word"] * 600)
    with pytest.warns(UserWarning, match="truncated"):
        embedding = tiny_sonar_encoder.encode([long_text])
    assert torch.isfinite(embedding).all()


@pytest.mark.parametrize(
    "bad, error", [([""], ValueError), (["ok", None], TypeError), (None, TypeError), (["  "], ValueError)]
)
def test_encode_refuses_bad_text(tiny_sonar_encoder, bad, error):
    with pytest.raises(error):
        tiny_sonar_encoder.encode(bad)


def test_encode_refuses_unknown_language(tiny_sonar_encoder):
    with pytest.raises(ValueError, match="eng_Latn"):
        tiny_sonar_encoder.encode(SENTENCES, lang="eng_latn")


def test_decoder_forward_returns_logits_and_loss(tiny_sonar_decoder, tiny_sonar_encoder):
    embeddings = tiny_sonar_encoder.encode(SENTENCES)
    labels = tiny_sonar_decoder.tokenizer(text_target=SENTENCES, padding=True, return_tensors="pt")["input_ids"]
    labels[labels == tiny_sonar_decoder.config.pad_token_id] = -100
    out = tiny_sonar_decoder(sentence_embeddings=embeddings, labels=labels)
    assert out.logits.shape == (*labels.shape, tiny_sonar_decoder.config.vocab_size)
    expected = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)
    # the decoder input is the labels shifted right behind `</s>`
    shifted = torch.cat([torch.full_like(labels[:, :1], 2), labels[:, :-1]], 1)
    shifted = shifted.masked_fill(shifted == -100, tiny_sonar_decoder.config.pad_token_id)
    again = tiny_sonar_decoder(sentence_embeddings=embeddings, decoder_input_ids=shifted, labels=labels)
    torch.testing.assert_close(again.loss, out.loss)


@pytest.mark.parametrize("settings", [dict(num_beams=1), dict(num_beams=5), dict(do_sample=True, top_p=0.9)])
def test_generate_with_and_without_cache(tiny_sonar_decoder, tiny_sonar_encoder, settings):
    embeddings = tiny_sonar_encoder.encode(SENTENCES)
    prompt = tiny_sonar_decoder.decoder_prompt(3, "eng_Latn")
    torch.manual_seed(0)
    cached = tiny_sonar_decoder.generate(
        sentence_embeddings=embeddings, decoder_input_ids=prompt, max_length=10, **settings
    )
    torch.manual_seed(0)
    uncached = tiny_sonar_decoder.generate(
        sentence_embeddings=embeddings, decoder_input_ids=prompt, max_length=10, use_cache=False, **settings
    )
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :2], prompt)


def test_decode_never_emits_undecodable_ids(tiny_sonar_decoder, tiny_sonar_encoder):
    tok = tiny_sonar_decoder.tokenizer
    # Push the logits towards the rows past the tokenizer, padding and <mask>: they must still never appear.
    decoder = tiny_sonar_decoder
    forbidden = [decoder.config.vocab_size - 1, decoder.config.vocab_size - 2, decoder.config.pad_token_id,
                 tok.convert_tokens_to_ids("<mask>")]  # fmt: skip
    original = decoder.lm_head.weight.detach().clone()
    try:
        with torch.no_grad():
            decoder.lm_head.weight[forbidden] *= 50
        texts, ids = decoder.decode(tiny_sonar_encoder.encode(SENTENCES), max_length=12, return_token_ids=True)
    finally:
        with torch.no_grad():
            decoder.lm_head.weight.copy_(original)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert not any(token in forbidden for row in ids for token in row)


def test_decode_is_batch_invariant(tiny_sonar_decoder, tiny_sonar_encoder):
    embeddings = tiny_sonar_encoder.encode(SENTENCES)
    together = tiny_sonar_decoder.decode(embeddings, max_length=12)
    alone = [tiny_sonar_decoder.decode(e, max_length=12)[0] for e in embeddings]
    assert together == alone


@pytest.mark.parametrize(
    "embeddings, message",
    [
        (torch.full((1, 16), float("nan")), "NaN"),
        (torch.full((1, 16), float("inf")), "NaN or inf"),
        (torch.zeros(1, 8), "width"),
        (torch.zeros(1, 16, dtype=torch.long), "floating"),
        (torch.zeros(2, 3, 16), "shape"),
    ],
)
def test_decode_refuses_bad_embeddings(tiny_sonar_decoder, embeddings, message):
    with pytest.raises((ValueError, TypeError), match=message):
        tiny_sonar_decoder.decode(embeddings)


def test_save_and_auto_load(tiny_sonar_encoder, tiny_sonar_decoder, tmp_path):
    for model, cls in ((tiny_sonar_encoder, SonarTextEncoder), (tiny_sonar_decoder, SonarTextDecoder)):
        folder = tmp_path / cls.__name__
        model.save_pretrained(folder)
        model.tokenizer.save_pretrained(folder)
        loaded = AutoModel.from_pretrained(folder)
        assert type(loaded) is cls
        tokenizer = AutoTokenizer.from_pretrained(folder)  # no remote code needed with the package installed
        assert tokenizer("Hello!")["input_ids"] == model.tokenizer("Hello!")["input_ids"]
        assert loaded.tokenizer is not None
        for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AutoModel.from_pretrained(tmp_path / "SonarTextDecoder")


# -- inference shortcuts: each gives what the plain computation gives ------------------------------------------------


def _plain_cross_attention_copy(decoder):
    """The same weights with M2M100's own cross-attention (queries, softmax over the one key)."""
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100Attention

    plain = copy.deepcopy(decoder)
    for layer in plain.decoder.layers:
        layer.encoder_attn.__class__ = M2M100Attention
    return plain


def test_one_vector_cross_attention_equals_full_attention(tiny_sonar_decoder, tiny_sonar_encoder):
    embeddings = tiny_sonar_encoder.encode(SENTENCES)
    labels = tiny_sonar_decoder.tokenizer(text_target=SENTENCES, padding=True, return_tensors="pt")["input_ids"]
    plain = _plain_cross_attention_copy(tiny_sonar_decoder)
    ours = tiny_sonar_decoder(sentence_embeddings=embeddings, labels=labels)
    expected = plain(sentence_embeddings=embeddings, labels=labels)
    torch.testing.assert_close(ours.logits, expected.logits, rtol=0, atol=1e-6)
    # with the KV cache (the cross-attention result is cached once), and in every decoding mode
    prompt = tiny_sonar_decoder.decoder_prompt(3, "eng_Latn")
    for settings in (dict(num_beams=1), dict(num_beams=4)):
        ids = tiny_sonar_decoder.generate(
            sentence_embeddings=embeddings, decoder_input_ids=prompt, max_length=12, **settings
        )
        same = plain.generate(sentence_embeddings=embeddings, decoder_input_ids=prompt, max_length=12, **settings)
        assert torch.equal(ids, same)
    assert tiny_sonar_decoder.decode(embeddings, max_length=12) == plain.decode(embeddings, max_length=12)
    # gradients reach the embeddings through the shortcut as through full attention
    grads = []
    for model in (tiny_sonar_decoder, plain):
        inputs = embeddings.clone().requires_grad_()
        model(sentence_embeddings=inputs, labels=labels).loss.backward()
        grads.append(inputs.grad)
        model.zero_grad()
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)


def test_cross_attention_dropout_in_training_takes_the_full_path(tiny_sonar_decoder, tiny_sonar_encoder):
    """Dropout can drop the single attention weight: training with attention dropout must not take the shortcut."""
    embeddings = tiny_sonar_encoder.encode(SENTENCES)
    labels = tiny_sonar_decoder.tokenizer(text_target=SENTENCES, padding=True, return_tensors="pt")["input_ids"]
    decoder = copy.deepcopy(tiny_sonar_decoder).train()
    plain = _plain_cross_attention_copy(decoder).train()
    for model in (decoder, plain):
        for layer in model.decoder.layers:
            layer.encoder_attn.dropout = 0.5
        model.config.dropout = model.config.activation_dropout = 0.0
    torch.manual_seed(0)
    ours = decoder(sentence_embeddings=embeddings, labels=labels).logits
    torch.manual_seed(0)
    expected = plain(sentence_embeddings=embeddings, labels=labels).logits
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def test_per_beam_pruning_gives_the_reference_search_tokens(tiny_sonar_decoder, tiny_sonar_encoder):
    """Per-beam pruning picks exactly what fairseq2's full top-k picks, and `decode` runs it."""
    from sonar_llm_hf.models.generation_sonar_text import fairseq2_beam_search
    from sonar_llm_hf.models.tokenization_sonar import suppressed_token_ids

    decoder = tiny_sonar_decoder
    embeddings = tiny_sonar_encoder.encode(SENTENCES * 3) + 0.1 * torch.randn(
        9, 16, generator=torch.Generator().manual_seed(0)
    )
    prompt = decoder.decoder_prompt(len(embeddings), "eng_Latn")
    suppress = suppressed_token_ids(decoder.tokenizer, decoder.config.vocab_size)
    reference = fairseq2_beam_search(
        decoder, embeddings, prompt, max_length=14, suppress_ids=suppress, prune_rows=False
    )
    pruned = fairseq2_beam_search(decoder, embeddings, prompt, max_length=14, suppress_ids=suppress)
    assert pruned[0] == reference[0]
    torch.testing.assert_close(torch.tensor(pruned[1]), torch.tensor(reference[1]), rtol=0, atol=1e-6)
    assert decoder.decode(embeddings, max_length=14, return_token_ids=True)[1] == reference[0]


def test_decode_scores_are_exact_when_logits_span_past_the_exp_floor(tiny_sonar_decoder, tiny_sonar_encoder):
    """The floor that keeps `exp` off its slow path changes no score: a step whose logits span hundreds (most ids
    below the floor) scores as fairseq2's full `log_softmax` does."""
    from sonar_llm_hf.models.generation_sonar_text import EXP_FLOOR, fairseq2_beam_search

    decoder = copy.deepcopy(tiny_sonar_decoder)
    with torch.no_grad():
        decoder.decoder.layer_norm.weight.mul_(1000.0)
    embeddings = tiny_sonar_encoder.encode(SENTENCES)
    prompt = decoder.decoder_prompt(len(embeddings), "eng_Latn")
    with torch.no_grad():
        logits = decoder(sentence_embeddings=embeddings, decoder_input_ids=prompt).logits[:, -1]
    shifted = logits - logits.amax(-1, keepdim=True)
    assert (shifted < EXP_FLOOR).float().mean() > 0.5  # the premise: most ids are below the floor
    reference = fairseq2_beam_search(decoder, embeddings, prompt, max_length=10, prune_rows=False)
    floored = fairseq2_beam_search(decoder, embeddings, prompt, max_length=10)
    assert floored[0] == reference[0]
    torch.testing.assert_close(torch.tensor(floored[1]), torch.tensor(reference[1]), rtol=1e-6, atol=1e-5)
