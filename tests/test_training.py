"""Real Trainer and real PEFT on a tiny model: learning, gradient accumulation, resume, LoRA save/load/merge."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from peft import PeftModel, get_peft_model
from transformers import AutoModel, Trainer, TrainerCallback, TrainingArguments

from sonar_llm_hf.data import SonarLLMDataCollator, prepare_dataset
from sonar_llm_hf.story_world import generate_corpus, story_to_text
from sonar_llm_hf.training import lora_config

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def train_set(_tiny_sonar_llm):
    raw = datasets.Dataset.from_dict({"text": [story_to_text(s) for s in generate_corpus(16, seed=5)]})
    return prepare_dataset(raw, _tiny_sonar_llm, max_sentences=6, progress_bar=False)


def arguments(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, learning_rate=1e-3, max_steps=1,
                    logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, data_seed=0,
                    dataloader_num_workers=0, disable_tqdm=True)  # fmt: skip
    settings.update(overrides)
    return TrainingArguments(**settings)


class StopAt(TrainerCallback):
    """Simulates an interruption: training stops after `step`, as if the job had been killed there."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def train(model, train_set, tmp_path, callbacks=None, **overrides):
    trainer = Trainer(model=model, args=arguments(tmp_path, **overrides), train_dataset=train_set,
                      data_collator=SonarLLMDataCollator(), callbacks=callbacks)  # fmt: skip
    trainer.train(resume_from_checkpoint=overrides.get("resume_from_checkpoint"))
    return trainer


def make_decoder_responsive(model):
    """A random tiny SONAR decoder is nearly uniform and barely listens to its memory, so almost nothing can be
    learned through it; boosting its token table and cross-attention gives the backbone a signal to learn from."""
    with torch.no_grad():
        model.sonar_decoder.decoder.embed_tokens.weight.mul_(20)
        for layer in model.sonar_decoder.decoder.layers:
            layer.encoder_attn.v_proj.weight.mul_(10)
            layer.encoder_attn.out_proj.weight.mul_(10)


def test_loss_falls_with_default_training_arguments(sonar_llm, train_set, tmp_path):
    """No `remove_unused_columns=False` needed: the dataset's columns are forward's arguments."""
    make_decoder_responsive(sonar_llm)
    trainer = train(sonar_llm, train_set, tmp_path, max_steps=30, learning_rate=1e-2, per_device_train_batch_size=8)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.92 * sum(losses[:5]) / 5, losses


def test_gradient_accumulation_equals_one_big_batch(sonar_llm, train_set, tmp_path):
    big, small = sonar_llm, copy.deepcopy(sonar_llm)
    train(big, train_set, tmp_path / "big", per_device_train_batch_size=8, optim="sgd", learning_rate=1.0)
    train(small, train_set, tmp_path / "small", per_device_train_batch_size=4, gradient_accumulation_steps=2,
          optim="sgd", learning_rate=1.0)  # fmt: skip
    for (name, a), (_, b) in zip(big.named_parameters(), small.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    moved = [n for n, p in big.named_parameters() if p.requires_grad]
    assert moved and all(not n.startswith("sonar_") for n in moved)


def test_resume_continues_exactly(sonar_llm, train_set, tmp_path):
    straight = copy.deepcopy(sonar_llm)
    train(straight, train_set, tmp_path / "straight", max_steps=4, per_device_train_batch_size=4)
    interrupted = copy.deepcopy(sonar_llm)
    train(interrupted, train_set, tmp_path / "run", max_steps=4, per_device_train_batch_size=4, save_strategy="steps",
          save_steps=2, callbacks=[StopAt(2)])  # fmt: skip
    resumed = copy.deepcopy(sonar_llm)
    train(resumed, train_set, tmp_path / "run", max_steps=4, per_device_train_batch_size=4, save_strategy="steps",
          save_steps=2, resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"))  # fmt: skip
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


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
    assert not torch.equal(after["sentence_in_proj.modules_to_save.default.weight"], base_before["sentence_in_proj.weight"])
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)
    # save the adapter, reload it on a fresh base, merge: same predictions
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
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
        torch.testing.assert_close(merged(sentence_embeddings=embeddings).predicted_embeddings, expected, atol=1e-5, rtol=0)


def test_lora_on_the_sonar_decoder_is_opt_in(sonar_llm):
    peft_model = get_peft_model(sonar_llm, lora_config(r=2, sonar_decoder=True))
    adapted = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("sonar_decoder" in n and "lora_" in n for n in adapted)
    assert not any("sonar_encoder" in n for n in adapted)


def test_finetune_script_end_to_end(tiny_sonar_llm_dir, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"text": story_to_text(s)}) for s in generate_corpus(12, seed=9)))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "finetune.py"), "--model_name_or_path", str(tiny_sonar_llm_dir),
         "--dataset", str(data), "--output_dir", str(out), "--max_steps", "3", "--per_device_train_batch_size", "4",
         "--eval_fraction", "0.25", "--eval_strategy", "steps", "--eval_steps", "3", "--logging_steps", "1",
         "--report_to", "none", "--use_cpu", "--save_strategy", "no"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    model = AutoModel.from_pretrained(out)
    out_text = model.generate("Tom had a red ball. He went to the park.", num_beams=1, max_new_sentences=1, max_length=10)
    assert len(out_text.sentences[0]) == 1
    assert "eval_loss" in result.stdout + result.stderr
