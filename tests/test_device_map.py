"""`device_map`: loading with accelerate's placement (and its CPU/disk offloading, where parameters sit on "meta" and
`module.device` lies) gives the same generation and loss as a plain load, because every tensor follows the module
that uses it. On one CPU this checks the hooks and the execution-device logic; several GPUs run the same code."""

import pytest
import torch
from transformers import AutoModel

from sonar_llm_hf.models.tokenization_sonar import execution_device

PROMPTS = [["The cat sat on the mat.", "It was happy."], ["A dog ran."]]


def outputs(model, **options):
    settings = dict(max_length=10, max_new_sentences=2, **options)
    return model.generate(PROMPTS, **settings)


def assert_same_generation(model, reference, **options):
    got, expected = outputs(model, **options), outputs(reference, **options)
    assert got.sentences == expected.sentences
    for a, b in zip(got.embeddings, expected.embeddings):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tiny_sonar_llm_dir):
    return AutoModel.from_pretrained(tiny_sonar_llm_dir)


def test_device_map_auto_loads_generates_and_trains_on_cpu(tiny_sonar_llm_dir, reference):
    model = AutoModel.from_pretrained(tiny_sonar_llm_dir, device_map="auto")
    assert execution_device(model) == torch.device("cpu")
    assert model.tokenizer is not None
    assert_same_generation(model, reference, num_beams=2)
    embeddings = reference.sonar_encoder.encode(PROMPTS[0])[None]
    labels = torch.tensor(reference.tokenizer(PROMPTS[0], padding=True)["input_ids"])[None]
    loss = model(embeddings, labels=labels).loss
    torch.testing.assert_close(loss, reference(embeddings, labels=labels).loss)


@pytest.mark.parametrize(
    "placement",
    [
        # every SONAR-LLM part offloaded: only the hooks know where they run
        {"sentence_in_proj": "disk", "model": "disk", "sentence_out_proj": "cpu", "sonar_encoder": "disk",
         "sonar_decoder": "disk"},
        # the decoder's last layer and LM head in other places than its first layers
        {"sentence_in_proj": "cpu", "model": "cpu", "sentence_out_proj": "disk", "sonar_encoder.encoder": "cpu",
         "sonar_decoder.decoder.embed_tokens": "cpu", "sonar_decoder.decoder.embed_positions": "cpu",
         "sonar_decoder.decoder.layers.0": "disk", "sonar_decoder.decoder.layers.1": "cpu",
         "sonar_decoder.decoder.layer_norm": "disk", "sonar_decoder.lm_head": "cpu", "sonar_decoder.memory": "cpu"},
    ],
    ids=["all-offloaded", "split-decoder"],
)  # fmt: skip
def test_offloaded_modules_generate_the_same(tiny_sonar_llm_dir, reference, tmp_path, placement):
    model = AutoModel.from_pretrained(tiny_sonar_llm_dir, device_map=placement, offload_folder=str(tmp_path))
    assert "disk" in model.hf_device_map.values()
    assert any(p.device.type == "meta" for p in model.parameters())  # `model.device` would be wrong here
    assert execution_device(model) == torch.device("cpu")
    assert_same_generation(model, reference, num_beams=2)  # fairseq2 beam search, vocabulary in chunks
    assert_same_generation(model, reference, num_beams=1)  # transformers' generate
    assert_same_generation(model, reference, do_sample=True, seed=0)


def test_device_map_auto_with_a_memory_limit_offloads_and_generates(tiny_sonar_llm_dir, reference, tmp_path):
    size = sum(p.numel() * p.element_size() for p in reference.parameters())
    model = AutoModel.from_pretrained(tiny_sonar_llm_dir, device_map="auto", max_memory={"cpu": size // 3},
                                      offload_folder=str(tmp_path))  # fmt: skip
    assert "disk" in model.hf_device_map.values()
    assert_same_generation(model, reference, num_beams=2)
