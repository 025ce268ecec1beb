"""Real PEFT on a tiny model: LoRA trains only adapters and the sentence projections, adapters save/load/merge, the
SONAR decoder can be adapted (LoRA) or unfrozen behind flags, and the CLI's --lora path ends in a loadable adapter."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import datasets
import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModel, Trainer, TrainingArguments

from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset
from sonar_llm_hf.training.lora import BACKBONE_LORA_TARGETS, lora_config, unfreeze_sonar_decoder

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def train_set(_tiny_sonar_llm):
    raw = datasets.Dataset.from_dict({"text": [story_to_text(s) for s in generate_corpus(8, seed=7)]})
    return prepare_dataset(raw, _tiny_sonar_llm, max_sentences=5, progress_bar=False)


def train(model, train_set, tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=1,
                    logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                    dataloader_num_workers=0, disable_tqdm=True)  # fmt: skip
    settings.update(overrides)
    trainer = Trainer(model=model, args=TrainingArguments(**settings), train_dataset=train_set,
                      data_collator=SonarLLMDataCollator())  # fmt: skip
    trainer.train()
    return trainer


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_lora_targets_only_the_backbone(sonar_llm):
    names = [n for n, _ in sonar_llm.named_modules()]
    targeted = [n for n in names if re.fullmatch(BACKBONE_LORA_TARGETS, n)]
    layers = sonar_llm.config.llama_config.num_hidden_layers
    assert len(targeted) == 7 * layers and all(n.startswith("model.layers.") for n in targeted)


def test_lora_trains_adapters_and_projections_only(sonar_llm, train_set, tmp_path):
    base_before = {k: v.clone() for k, v in sonar_llm.state_dict().items()}
    peft_model = get_peft_model(sonar_llm, lora_config(r=4, alpha=8, dropout=0.0))
    adapted = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert adapted and all("lora_" in n or "sentence_in_proj" in n or "sentence_out_proj" in n for n in adapted)
    assert not any("sonar_" in n for n in adapted)
    train(peft_model, train_set, tmp_path, max_steps=3, learning_rate=1e-2)
    # base weights are bit-identical (LoRA keeps them as `base_layer`, the projections as `original_module`) ...
    after = peft_model.base_model.model.state_dict()

    def original(name):
        module, _, leaf = name.rpartition(".")
        for candidate in (name, f"{module}.base_layer.{leaf}", f"{module}.original_module.{leaf}"):
            if candidate in after:
                return after[candidate]
        raise KeyError(name)

    for name, tensor in base_before.items():
        assert torch.equal(original(name), tensor), name
    # ... while the projections' trained copies and the adapters moved
    trained_in_proj = after["sentence_in_proj.modules_to_save.default.weight"]
    assert not torch.equal(trained_in_proj, base_before["sentence_in_proj.weight"])
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)
    # save the adapter, reload it on a fresh base, merge: same predictions
    peft_model.save_pretrained(tmp_path / "adapter")
    saved = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert saved and all("lora_" in k or "sentence_" in k for k in saved), list(saved)  # no SONAR, no base weight
    embeddings = torch.randn(2, 3, sonar_llm.config.embed_dim) * 0.2
    peft_model.eval()
    with torch.no_grad():
        expected = peft_model(sentence_embeddings=embeddings).predicted_embeddings
    base = type(sonar_llm)(sonar_llm.config)  # a clean model holding the original weights
    base.load_state_dict(base_before)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(sentence_embeddings=embeddings).predicted_embeddings, expected)
        merged = reloaded.merge_and_unload()
        merged_out = merged(sentence_embeddings=embeddings).predicted_embeddings
        torch.testing.assert_close(merged_out, expected, atol=1e-5, rtol=0)


def test_lora_on_the_sonar_decoder_is_opt_in(sonar_llm, train_set, tmp_path):
    decoder_before = {k: v.clone() for k, v in sonar_llm.sonar_decoder.state_dict().items()}
    peft_model = get_peft_model(sonar_llm, lora_config(r=2, dropout=0.0, sonar_decoder=True))
    adapted = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("sonar_decoder" in n and "lora_" in n for n in adapted)
    assert not any("sonar_encoder" in n for n in adapted)
    train(peft_model, train_set, tmp_path, max_steps=2, learning_rate=1e-2)
    decoder = peft_model.base_model.model.sonar_decoder
    moved = [n for n, p in decoder.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert moved  # the decoder's adapters received gradients through the frozen decoder ...
    after = decoder.state_dict()
    for name, tensor in decoder_before.items():  # ... while its weights stayed bit-identical
        module, _, leaf = name.rpartition(".")
        assert torch.equal(after.get(name, after.get(f"{module}.base_layer.{leaf}")), tensor), name


def test_unfreezing_the_sonar_decoder_trains_it_and_not_the_encoder(sonar_llm, train_set, tmp_path):
    encoder_before = {k: v.clone() for k, v in sonar_llm.sonar_encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in sonar_llm.sonar_decoder.state_dict().items()}
    unfreeze_sonar_decoder(sonar_llm)
    assert sonar_llm.config.train_sonar_decoder
    assert sonar_llm.train().sonar_decoder.training and not sonar_llm.sonar_encoder.training
    train(sonar_llm, train_set, tmp_path, max_steps=2, learning_rate=1e-2)
    for name, tensor in sonar_llm.sonar_encoder.state_dict().items():
        assert torch.equal(tensor, encoder_before[name]), name
    changed = [n for n, t in sonar_llm.sonar_decoder.state_dict().items() if not torch.equal(t, decoder_before[n])]
    assert any("layers" in n for n in changed)
    sonar_llm.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["train_sonar_decoder"] is True


def test_finetune_cli_lora_adapter_loads_and_generates(tiny_sonar_llm_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"text": story_to_text(s)}) for s in generate_corpus(8, seed=13)))
    finetune = load_example("finetune")
    common = ["--model_name_or_path", str(tiny_sonar_llm_dir), "--dataset", str(data), "--max_steps", "2",
              "--per_device_train_batch_size", "4", "--report_to", "none", "--use_cpu", "--save_strategy", "no",
              "--disable_tqdm", "true"]  # fmt: skip
    out = tmp_path / "adapter"
    code = finetune.main([*common, "--output_dir", str(out), "--lora", "--lora_r", "4", "--learning_rate", "1e-2"])
    assert code == 0
    assert (out / "adapter_config.json").exists() and not (out / "model.safetensors").exists()
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_sonar_llm_dir), out)
    generated = model.generate("Tom had a red ball. He went to the park.", num_beams=1, max_new_sentences=1,
                               max_length=10)  # fmt: skip
    assert len(generated.sentences[0]) == 1
    # a flag combination that would silently do something else is refused
    with pytest.raises(SystemExit):
        finetune.main([*common, "--output_dir", str(tmp_path / "x"), "--lora", "--train_sonar_decoder"])
    assert "--lora_sonar_decoder" in capsys.readouterr().err


def test_finetune_lora_example_saves_adapter_and_merged_model(tiny_sonar_llm_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"text": story_to_text(s)}) for s in generate_corpus(8, seed=17)))
    out = tmp_path / "lora-out"
    load_example("finetune_lora").main(["--model", str(tiny_sonar_llm_dir), "--dataset", str(data), "--output",
                                        str(out), "--steps", "2", "--batch-size", "4", "--rank", "4",
                                        "--learning-rate", "1e-2", "--merge"])  # fmt: skip
    adapted = PeftModel.from_pretrained(AutoModel.from_pretrained(tiny_sonar_llm_dir), out).eval()
    merged = AutoModel.from_pretrained(out / "merged").eval()
    embeddings = torch.randn(2, 3, merged.config.embed_dim) * 0.2
    with torch.no_grad():
        expected = adapted(sentence_embeddings=embeddings).predicted_embeddings
        torch.testing.assert_close(merged(sentence_embeddings=embeddings).predicted_embeddings, expected,
                                   atol=1e-5, rtol=0)  # fmt: skip
    generated = merged.generate("Tom had a red ball.", num_beams=1, max_new_sentences=1, max_length=8)
    assert len(generated.sentences[0]) == 1
