"""Padding-free encoding (`models/packed_encoding_sonar.py`) gives M2M100's own embeddings, and steps aside where it
cannot apply."""

import torch

from sonar_llm_hf.models import packed_encoding_sonar as packed
from sonar_llm_hf.models.modeling_sonar_text import masked_mean_pool

RAGGED = ["Hi.", "The cat sat on the mat all afternoon.", "A dog ran.", "One two three four five six seven eight nine."]


def _batch(encoder, texts):
    batch = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    assert not batch["attention_mask"].bool().all(), "the test needs padding"
    return batch["input_ids"], batch["attention_mask"]


@torch.no_grad()
def test_packed_states_equal_m2m100s_at_real_tokens(tiny_sonar_encoder):
    ids, mask = _batch(tiny_sonar_encoder, RAGGED)
    reference = tiny_sonar_encoder(ids, mask).last_hidden_state
    states = packed.packed_encoder_states(tiny_sonar_encoder.encoder, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(states[real], reference[real], rtol=0, atol=1e-5)
    assert (states[~real] == 0).all()
    torch.testing.assert_close(masked_mean_pool(states, mask), tiny_sonar_encoder(ids, mask).pooler_output, rtol=0, atol=1e-6)


@torch.no_grad()
def test_encode_takes_the_packed_path_and_matches_the_padded_one(tiny_sonar_encoder, monkeypatch):
    calls = []
    original = packed.packed_encoder_states
    monkeypatch.setattr("sonar_llm_hf.models.modeling_sonar_text.packed_encoder_states",
                        lambda *a: calls.append(1) or original(*a))  # fmt: skip
    fast = tiny_sonar_encoder.encode(RAGGED, batch_size=4)
    assert calls, "encode did not use the padding-free path"
    monkeypatch.setattr("sonar_llm_hf.models.modeling_sonar_text.packed_encoding_applies", lambda encoder: False)
    torch.testing.assert_close(fast, tiny_sonar_encoder.encode(RAGGED, batch_size=4), rtol=0, atol=1e-6)


def test_packed_path_steps_aside_for_training_gradients_eager_attention_and_hooks(tiny_sonar_encoder):
    encoder = tiny_sonar_encoder.encoder
    with torch.no_grad():
        assert packed.packed_encoding_applies(encoder)
    assert not packed.packed_encoding_applies(encoder)  # gradients enabled
    with torch.no_grad():
        encoder.train()
        try:
            assert not packed.packed_encoding_applies(encoder)
        finally:
            encoder.eval()
        implementation = encoder.config._attn_implementation
        encoder.config._attn_implementation = "eager"
        try:
            assert not packed.packed_encoding_applies(encoder)
        finally:
            encoder.config._attn_implementation = implementation
        encoder.layers[0]._hf_hook = object()  # what accelerate's device_map leaves on a module
        try:
            assert not packed.packed_encoding_applies(encoder)
        finally:
            del encoder.layers[0]._hf_hook


@torch.no_grad()
def test_packed_path_runs_peft_adapters(tiny_sonar_encoder, monkeypatch):
    """LoRA layers replace q/v projections; the padding-free loop calls them like M2M100's attention does."""
    import copy

    from peft import LoraConfig, get_peft_model

    encoder = copy.deepcopy(tiny_sonar_encoder)
    adapted = get_peft_model(encoder, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.eval()
    fast = encoder.encode(RAGGED)
    monkeypatch.setattr("sonar_llm_hf.models.modeling_sonar_text.packed_encoding_applies", lambda e: False)
    padded = encoder.encode(RAGGED)
    torch.testing.assert_close(fast, padded, rtol=0, atol=1e-6)
    assert not torch.allclose(fast, tiny_sonar_encoder.encode(RAGGED), atol=1e-4)  # the adapters do change it
