"""`examples/pretrain.py`: the paper's pretraining recipe runs end to end with the real Trainer on the story world
(tiny preset, the demo model's frozen SONAR), logs a falling validation loss, and saves a loadable model."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text

EXAMPLES = Path(__file__).parents[1] / "examples"


def _pretrain():
    spec = importlib.util.spec_from_file_location("pretrain_example", EXAMPLES / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_recipe_defaults_yield_to_the_command_line():
    pretrain = _pretrain()
    argv = pretrain.with_recipe(["--learning_rate", "3e-4", "--output_dir", "x"])
    assert argv.count("--learning_rate") == 1 and argv[argv.index("--learning_rate") + 1] == "3e-4"
    for flag, value in (("--adam_epsilon", "1e-5"), ("--lr_scheduler_type", "cosine"), ("--max_grad_norm", "1.0"),
                        ("--num_train_epochs", "4"), ("--warmup_steps", "0.05")):  # fmt: skip
        assert argv[argv.index(flag) + 1] == value


def test_pretrain_on_the_story_world(tmp_path):
    import datasets
    from transformers import AutoModel, Trainer, TrainingArguments

    from sonar_llm_hf import SonarLLMDataCollator, demo

    data = tmp_path / "stories.jsonl"
    data.write_text("".join(json.dumps({"text": story_to_text(s)}) + "\n" for s in generate_corpus(40, seed=7)))
    out = tmp_path / "out"
    argv = ["--preset", "tiny", "--sonar_name_or_path", demo.default_model_path(), "--dataset", str(data),
            "--eval_fraction", "0.2", "--output_dir", str(out), "--per_device_train_batch_size", "4",
            "--global_batch_size", "4", "--num_train_epochs", "1", "--eval_strategy", "steps", "--eval_steps", "2",
            "--logging_steps", "1", "--save_strategy", "no", "--use_cpu", "--disable_tqdm", "true",
            "--report_to", "none"]  # fmt: skip
    assert _pretrain().main(argv) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry]
    assert len(evals) >= 4 and evals[-1] < evals[0] - 0.1, evals
    lrs = [entry["learning_rate"] for entry in state["log_history"] if "learning_rate" in entry]
    assert max(lrs) == pytest.approx(1e-3, rel=0.1) and lrs[-1] < 0.1 * max(lrs)  # warmup, then cosine decay
    assert state["global_step"] == 8  # 32 training stories, 4 per step, 1 epoch
    # the SONAR embeddings are cached (an interrupted run resumes from them) and the result is a complete model
    assert list((out / "embeddings").glob("train-part0of1-embed0-*.arrow"))
    model = AutoModel.from_pretrained(out)
    assert model.config.llama_config.hidden_size == 64 and model.tokenizer is not None
    # it is the trained model, not an initialisation or an earlier one: it gives the last validation loss logged,
    # which the example measured after the last step, on the same cached validation set and batches
    last = [entry for entry in state["log_history"] if "eval_loss" in entry][-1]
    assert last["step"] == state["global_step"]
    eval_set = datasets.Dataset.from_file(str(next((out / "embeddings").glob("eval-part0of1-embed0-*.arrow"))))
    args = TrainingArguments(str(tmp_path / "check"), per_device_eval_batch_size=8, use_cpu=True, report_to=[])
    trainer = Trainer(model=model, args=args, data_collator=SonarLLMDataCollator.for_model(model))
    assert trainer.evaluate(eval_set)["eval_loss"] == pytest.approx(last["eval_loss"], rel=1e-5)
    # and it continues a story (the end-of-text test off, so that exactly one sentence comes)
    sentences = model.generate("Tom had a red ball. He went to the park.", max_new_sentences=1, eos_check="predicted",
                               eos_threshold=1.0).sentences[0]  # fmt: skip
    assert len(sentences) == 1 and sentences[0].strip()


@pytest.mark.parametrize("streaming", [False, True])
def test_pretrain_reads_embed_shards_without_re_embedding(tmp_path, streaming, monkeypatch):
    from sonar_llm_hf import demo
    from sonar_llm_hf.cli import main as cli_main
    from sonar_llm_hf.models.modeling_sonar_text import SonarTextEncoder

    data = tmp_path / "stories.jsonl"
    data.write_text("".join(json.dumps({"text": story_to_text(s)}) + "\n" for s in generate_corpus(12, seed=3)))
    corpus = tmp_path / "corpus"
    assert cli_main(["embed", str(data), "--output", str(corpus), "--model", demo.default_model_path(),
                     "--shard-rows", "5", "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    encoded = []  # every SONAR encoder call during pretraining: only the end sentence, once
    original = SonarTextEncoder.encode_token_ids
    monkeypatch.setattr(SonarTextEncoder, "encode_token_ids",
                        lambda self, ids, **kw: encoded.append(len(ids)) or original(self, ids, **kw))  # fmt: skip
    out = tmp_path / "out"
    argv = [
        "--preset",
        "tiny",
        "--sonar_name_or_path",
        demo.default_model_path(),
        "--embedded_corpus",
        str(corpus),
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "2",
        "--global_batch_size",
        "2",
        "--max_steps",
        "3",
        "--logging_steps",
        "1",
        "--save_strategy",
        "no",
        "--use_cpu",
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        "--eval_strategy",
        "no",
        *(["--streaming"] if streaming else []),
    ]
    assert _pretrain().main(argv) == 0
    assert encoded == [1]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and all(e["loss"] > 0 for e in state["log_history"] if "loss" in e)
