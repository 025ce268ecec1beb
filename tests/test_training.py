"""Real Trainer on a tiny model: learning, gradient accumulation, exact resume, the fine-tuning CLI end to end."""

import copy
import importlib.util
import json
import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModel, Trainer, TrainerCallback, TrainingArguments

from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset

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


def logged_losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


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
    losses = logged_losses(trainer)
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.92 * sum(losses[:5]) / 5, losses


def test_gradient_accumulation_equals_one_big_batch(sonar_llm, train_set, tmp_path):
    """Documents differ in sentences and tokens, so this holds only if the model divides its summed CE by Trainer's
    `num_items_in_batch` (the target count of all accumulated micro-batches), not by each micro-batch's own count."""
    counts = {sum(len(ids) for ids in labels[1:]) for labels in train_set["labels"]}
    assert len(counts) > 4  # documents hold different target counts, so micro-batches do too
    big, small = sonar_llm, copy.deepcopy(sonar_llm)
    big_trainer = train(big, train_set, tmp_path / "big", per_device_train_batch_size=8, optim="sgd",
                        learning_rate=1.0)  # fmt: skip
    small_trainer = train(small, train_set, tmp_path / "small", per_device_train_batch_size=4,
                          gradient_accumulation_steps=2, optim="sgd", learning_rate=1.0)  # fmt: skip
    # one SGD step with lr 1: equal weights <=> equal gradients
    for (name, a), (_, b) in zip(big.named_parameters(), small.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert logged_losses(big_trainer) == pytest.approx(logged_losses(small_trainer), rel=1e-5)
    moved = [n for n, p in big.named_parameters() if p.requires_grad]
    assert moved and all(not n.startswith("sonar_") for n in moved)


def test_resume_continues_exactly(sonar_llm, train_set, tmp_path):
    """Interrupted after step 2 (mid-epoch, under gradient accumulation), resumed from checkpoint-2: the same data
    order, the same updates into the next epoch, and the same loss log as an uninterrupted run."""
    settings = dict(max_steps=6, per_device_train_batch_size=2, gradient_accumulation_steps=2)  # 4 steps an epoch
    straight = copy.deepcopy(sonar_llm)
    straight_trainer = train(straight, train_set, tmp_path / "straight", **settings)
    interrupted = copy.deepcopy(sonar_llm)
    train(interrupted, train_set, tmp_path / "run", save_strategy="steps", save_steps=2, callbacks=[StopAt(2)],
          **settings)  # fmt: skip
    resumed = copy.deepcopy(sonar_llm)
    resumed_trainer = train(resumed, train_set, tmp_path / "run", save_strategy="steps", save_steps=2,
                            resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-2"), **settings)  # fmt: skip
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert len(logged_losses(resumed_trainer)) == 6
    assert logged_losses(resumed_trainer) == pytest.approx(logged_losses(straight_trainer), rel=1e-6)


def test_finetune_script_end_to_end(tiny_sonar_llm_dir, tmp_path, monkeypatch):
    """The one-command promise: a jsonl file in, a model out that loads with `from_pretrained` and generates;
    default TrainingArguments (no remove_unused_columns), evaluation loss, checkpoints that are complete models.
    (Run in this process to save an interpreter start; test_distributed runs the script under `accelerate launch`.)"""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"text": story_to_text(s)}) for s in generate_corpus(12, seed=9)))
    out = tmp_path / "out"
    spec = importlib.util.spec_from_file_location("example_finetune", ROOT / "examples" / "finetune.py")
    finetune = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = finetune
    spec.loader.exec_module(finetune)
    code = finetune.main([
        "--model_name_or_path", str(tiny_sonar_llm_dir), "--dataset", str(data), "--output_dir", str(out),
        "--max_steps", "3", "--per_device_train_batch_size", "4", "--eval_fraction", "0.25", "--eval_strategy",
        "steps", "--eval_steps", "3", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "--save_steps", "3",
        "--disable_tqdm", "true",
    ])  # fmt: skip
    assert code == 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3]
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] > 0
    assert (out / "checkpoint-3" / "tokenizer.json").exists()  # each checkpoint is a complete model folder
    model = AutoModel.from_pretrained(out)
    assert model.config.to_dict().get("eos_token_id") is None  # Trainer wrote no token ids into the config
    out_text = model.generate("Tom had a red ball. He went to the park.", num_beams=1, max_new_sentences=1,
                              max_length=10)  # fmt: skip
    assert len(out_text.sentences[0]) == 1


def test_mixed_precision_follows_the_hardware(tmp_path):
    from sonar_llm_hf.training.lora import resolve_mixed_precision

    cpu = arguments(tmp_path)
    assert resolve_mixed_precision(cpu, "auto") is cpu  # no GPU: full precision, nothing changed
    assert resolve_mixed_precision(arguments(tmp_path, bf16=True), "auto").bf16  # an explicit choice is kept
    forced = resolve_mixed_precision(cpu, "bf16")
    assert forced.bf16 and not forced.fp16 and forced.mixed_precision == "bf16"
    with pytest.raises(ValueError, match="'auto', 'no', 'bf16' or 'fp16'"):
        resolve_mixed_precision(cpu, "fp8")
