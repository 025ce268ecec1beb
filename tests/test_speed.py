"""`sonar_llm_hf.speed`: the optional speed paths give the plain model's results, step aside where they cannot apply,
and stay out of the Hub's remote code."""

import ast
import copy
from pathlib import Path

import pytest
import torch

import sonar_llm_hf
from sonar_llm_hf.models.modeling_sonar_text import masked_mean_pool
from sonar_llm_hf.speed import PackedLinear, padding_free, prepare_for_inference, restore_plain_kernels
from sonar_llm_hf.speed.onednn import onednn_applies, restore_linears, use_onednn_linears

RAGGED = [
    "Hi.",
    "The cat sat on the mat all afternoon.",
    "A dog ran.",
    "One two three four five six seven eight nine.",
]
SENTENCES = ["The cat sat on the mat.", "A dog ran in the park.", "Hello world."]


def _batch(encoder, texts):
    batch = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    assert not batch["attention_mask"].bool().all(), "the test needs padding"
    return batch["input_ids"], batch["attention_mask"]


def test_models_folder_holds_no_private_torch_op_or_speed_path():
    """The Hub payload uses public torch and transformers only: no mkldnn op, no import of the speed package."""
    models = Path(sonar_llm_hf.__file__).parent / "models"
    for path in models.glob("*.py"):
        source = path.read_text()
        assert "mkldnn" not in source and "torch.ops" not in source, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                assert "speed" not in (node.module or ""), path.name


@torch.no_grad()
def test_padding_free_states_equal_m2m100s_at_real_tokens(tiny_sonar_encoder):
    ids, mask = _batch(tiny_sonar_encoder, RAGGED)
    reference = tiny_sonar_encoder(ids, mask).last_hidden_state
    states = padding_free.packed_encoder_states(tiny_sonar_encoder.encoder, ids, mask)
    real = mask.bool()
    # one fp32 layer stack computed in another order: differences of a few ulps of activations of order 1-10
    torch.testing.assert_close(states[real], reference[real], rtol=0, atol=1e-5)
    assert (states[~real] == 0).all()
    torch.testing.assert_close(
        masked_mean_pool(states, mask), tiny_sonar_encoder(ids, mask).pooler_output, rtol=0, atol=1e-6
    )


@torch.no_grad()
def test_prepared_encoder_takes_the_padding_free_path_and_matches_the_plain_one(tiny_sonar_encoder, monkeypatch):
    encoder = copy.deepcopy(tiny_sonar_encoder)
    plain = encoder.encode(RAGGED, batch_size=4)
    prepare_for_inference(encoder, kernels="onednn")
    calls = []
    original = padding_free.packed_encoder_states
    monkeypatch.setattr(padding_free, "packed_encoder_states", lambda *a: calls.append(1) or original(*a))
    fast = encoder.encode(RAGGED, batch_size=4)
    assert calls, "encode did not use the padding-free path"
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-6)
    restore_plain_kernels(encoder)
    calls.clear()
    encoder.encode(RAGGED, batch_size=4)
    assert not calls and "forward" not in encoder.encoder.__dict__


def test_padding_free_path_steps_aside_for_training_gradients_eager_attention_and_hooks(tiny_sonar_encoder):
    encoder = tiny_sonar_encoder.encoder
    applies = padding_free.packed_encoding_applies
    with torch.no_grad():
        assert applies(encoder)
    assert not applies(encoder)  # gradients enabled
    with torch.no_grad():
        encoder.train()
        try:
            assert not applies(encoder)
        finally:
            encoder.eval()
        implementation = encoder.config._attn_implementation
        encoder.config._attn_implementation = "eager"
        try:
            assert not applies(encoder)
        finally:
            encoder.config._attn_implementation = implementation
        encoder.layers[0]._hf_hook = object()  # what accelerate's device_map leaves on a module
        try:
            assert not applies(encoder)
        finally:
            del encoder.layers[0]._hf_hook


@torch.no_grad()
def test_padding_free_path_runs_peft_adapters(tiny_sonar_encoder):
    """LoRA layers replace q/v projections; the padding-free loop calls them like M2M100's attention does."""
    from peft import LoraConfig, get_peft_model

    encoder = copy.deepcopy(tiny_sonar_encoder)
    adapted = get_peft_model(encoder, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapted.eval()
    padded = encoder.encode(RAGGED)
    prepare_for_inference(encoder, kernels="onednn")
    fast = encoder.encode(RAGGED)
    torch.testing.assert_close(fast, padded, rtol=0, atol=1e-6)
    assert not torch.allclose(fast, tiny_sonar_encoder.encode(RAGGED), atol=1e-4)  # the adapters do change it


def test_onednn_linears_are_close_to_torch_and_undone_exactly(tiny_sonar_decoder):
    decoder = copy.deepcopy(tiny_sonar_decoder)
    linear = decoder.lm_head
    inputs = torch.randn(7, 1, 16)
    expected = linear(inputs)
    assert onednn_applies(decoder)  # fp32 on CPU, as CI runs
    assert use_onednn_linears(decoder) > 0
    with torch.no_grad():
        assert "forward" in linear.__dict__ and "vocab_chunks" in linear.__dict__
        # one dot product of 16 fp32 terms of order 1 in another order: a few ulps
        torch.testing.assert_close(linear(inputs), expected, rtol=1e-6, atol=1e-6)
    leaf = inputs.clone().requires_grad_()  # anything that needs a gradient keeps torch's differentiable path
    linear(leaf).sum().backward()
    assert leaf.grad is not None
    restore_linears(decoder)
    assert "forward" not in linear.__dict__ and "vocab_chunks" not in linear.__dict__
    half = copy.deepcopy(tiny_sonar_decoder).to(torch.bfloat16)
    assert not onednn_applies(half)
    prepare_for_inference(half, kernels="onednn")
    assert "forward" not in half.lm_head.__dict__  # other dtypes are left alone


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(num_beams=1), dict(num_beams=4, beam_search="transformers"), dict(do_sample=True, top_p=0.9)],
)
@pytest.mark.parametrize("kernels", ["onednn", "packed"])
def test_speed_paths_keep_every_decoding_mode(tiny_sonar_decoder, tiny_sonar_encoder, settings, kernels):
    embeddings = tiny_sonar_encoder.encode(SENTENCES)
    torch.manual_seed(0)
    plain = tiny_sonar_decoder.decode(embeddings, max_length=12, return_token_ids=True, **settings)
    fast_decoder = prepare_for_inference(copy.deepcopy(tiny_sonar_decoder), kernels=kernels)
    torch.manual_seed(0)
    assert fast_decoder.decode(embeddings, max_length=12, return_token_ids=True, **settings) == plain


def test_prepare_for_inference_packs_only_fp32_cpu_sonar(sonar_llm):
    def packed_layers(model):
        return sum(isinstance(m, PackedLinear) for m in model.modules())

    plain_layers = sum(isinstance(m, torch.nn.Linear) for m in sonar_llm.sonar_encoder.encoder.modules())
    assert packed_layers(prepare_for_inference(copy.deepcopy(sonar_llm), kernels="onednn")) == 0
    assert packed_layers(prepare_for_inference(copy.deepcopy(sonar_llm), kernels="plain")) == 0
    model = prepare_for_inference(copy.deepcopy(sonar_llm))
    assert not model.training and model.sonar_encoder.packed == model.sonar_decoder.packed == "onednn"
    assert packed_layers(model.sonar_encoder) == plain_layers
    restore_plain_kernels(model)
    assert packed_layers(model) == 0 and not any("forward" in m.__dict__ for m in model.modules()
                                                 if type(m) is torch.nn.Linear)  # fmt: skip
    assert packed_layers(prepare_for_inference(sonar_llm.__class__(sonar_llm.config).to(torch.bfloat16))) == 0
    with pytest.raises(ValueError, match="kernels"):
        prepare_for_inference(sonar_llm, kernels="fast")
    int8 = prepare_for_inference(copy.deepcopy(sonar_llm), kernels="int8")
    with pytest.raises(ValueError, match="load the folder again"):
        restore_plain_kernels(int8)
