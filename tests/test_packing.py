"""`pack_sonar`: exact fp32 inference with oneDNN-packed weights, on the packaged demo model; refusals that keep it
from being trained, saved or transformed twice."""

import pytest
import torch
from torch import nn

from sonar_llm_hf import SonarLLMForCausalSentenceModeling, pack_sonar, quantize_sonar, unpack_sonar
from sonar_llm_hf.demo import PACKAGED_DEMO
from sonar_llm_hf.demo.story_world import distinct_sentences
from sonar_llm_hf.speed.packing import PackedLinear
from sonar_llm_hf.testing.reference import plain_torch_products


@pytest.fixture(scope="module")
def demo_pair():
    plain = SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval()
    packed = pack_sonar(SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval())
    return plain, packed


def test_packed_sonar_gives_the_same_embeddings_sentences_and_documents(demo_pair):
    """The baseline is torch's plain products (BLAS), not our unpacked oneDNN route: a baseline on oneDNN would share
    any error of oneDNN's. Tolerance: the same fp32 sums in another order, about sqrt(K) * eps * |terms| per
    product (K <= 1024 here: 4e-6 for terms of size 1), a few layers deep -> 1e-5."""
    plain, packed = demo_pair
    sentences = distinct_sentences(60, seed=3, limit=60)
    prompt = ["Tom had a red ball.", "He liked to play."]
    with plain_torch_products():
        embeddings = plain.sonar_encoder.encode(sentences)
        decoded = plain.sonar_decoder.decode(embeddings, return_token_ids=True)
        generated = plain.generate(prompt).sentences
    torch.testing.assert_close(packed.sonar_encoder.encode(sentences), embeddings, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed.sonar_encoder.encode(sentences[:1]), embeddings[:1], rtol=0, atol=1e-5)
    assert packed.sonar_decoder.decode(embeddings, return_token_ids=True) == decoded
    assert packed.generate(prompt).sentences == generated


def test_packing_replaces_every_layer_weight(demo_pair):
    _, packed = demo_pair
    for part in (packed.sonar_encoder.encoder, packed.sonar_decoder.decoder):
        assert not any(isinstance(m, nn.Linear) for m in part.modules())
        layers = [m for m in part.modules() if isinstance(m, PackedLinear)]
        assert layers and all(m.packed_weight.is_mkldnn for m in layers)
    assert isinstance(packed.sonar_decoder.lm_head, nn.Linear)  # tied to the token table, kept plain


def test_packed_model_refuses_saving_training_and_a_second_transform(demo_pair, tmp_path):
    _, packed = demo_pair
    with pytest.raises(ValueError, match="inference only"):
        packed.save_pretrained(tmp_path / "packed")
    assert not (tmp_path / "packed" / "model.safetensors").exists()
    layer = packed.sonar_encoder.encoder.layers[0].fc1
    with pytest.raises(RuntimeError, match="no backward"):
        layer(torch.randn(2, layer.in_features, requires_grad=True))
    with pytest.raises(ValueError, match="already packed"):
        pack_sonar(packed)
    with pytest.raises(ValueError, match="already packed"):
        quantize_sonar(packed)


def test_quantized_model_refuses_saving_and_packing(tmp_path):
    model = quantize_sonar(SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval())
    with pytest.raises(ValueError, match="already quantized"):
        pack_sonar(model)
    with pytest.raises(ValueError, match="quantized int8"):
        model.save_pretrained(tmp_path / "int8")


def test_packing_refuses_non_fp32_models():
    model = SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval()
    with pytest.raises(ValueError, match="fp32"):
        pack_sonar(model.sonar_encoder.to(torch.bfloat16))
    with pytest.raises(TypeError, match="pack_sonar takes"):
        pack_sonar(nn.Linear(2, 2))


def test_unpacking_gives_back_the_same_trainable_savable_model(tmp_path):
    plain = SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval()
    model = unpack_sonar(pack_sonar(SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval()))
    state, original = model.state_dict(), plain.state_dict()
    assert state.keys() == original.keys() and all(torch.equal(state[k], original[k]) for k in original)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == {
        n: p.requires_grad for n, p in plain.named_parameters()
    }
    model.save_pretrained(tmp_path / "again")
    reloaded = SonarLLMForCausalSentenceModeling.from_pretrained(tmp_path / "again")
    assert all(torch.equal(reloaded.state_dict()[k], original[k]) for k in original)
    with pytest.raises(ValueError, match="not packed"):
        unpack_sonar(model)
