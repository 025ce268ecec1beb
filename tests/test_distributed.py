"""Data parallelism: `accelerate launch` with the shipped CPU config (2 processes over gloo) gives the same losses and
gradients as 1 process with the same global batch, for every loss type.

The gradients are compared through plain SGD (no momentum, no clipping), where a weight's change is linear in its
gradient: Adam divides each gradient by its own running magnitude, so it amplifies the float-order noise of
near-zero gradients (one weight of 1024 off by 5e-6 on an AMD EPYC) and hides a wrong gradient scale."""

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModel

from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def arguments(model_dir, data, out, per_device, loss_type):
    return ["--model_name_or_path", str(model_dir), "--dataset", str(data), "--output_dir", str(out), "--max_steps",
            "2", "--per_device_train_batch_size", str(per_device), "--gradient_accumulation_steps", "2",
            "--learning_rate", "1e-2", "--optim", "sgd", "--max_grad_norm", "0", "--logging_steps", "1",
            "--report_to", "none", "--use_cpu", "--save_strategy", "no", "--seed", "0", "--dataloader_num_workers",
            "0", "--disable_tqdm", "true", "--loss_type", loss_type]  # fmt: skip


def losses(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


@pytest.mark.parametrize("loss_type", ["ce", "ce+mse"])  # "ce+mse" covers the MSE term
def test_two_gloo_processes_equal_one(tiny_sonar_llm_dir, tmp_path, monkeypatch, loss_type):
    """Each loss is a sum over target tokens divided by Trainer's count gathered over both processes, so the ragged
    documents (different sentence and token counts per process) give the same step as one process.

    Tolerance, from fp32 arithmetic: each gradient element (and each loss) is a sum of K terms, one per target token,
    each itself the end of products over at most the vocabulary; the two runs add them in other orders and groupings,
    which moves a sum of K terms by at most (K - 1) * eps * the sum of their magnitudes (Higham's bound). Loss terms
    are positive (the bound is then relative to the loss); for gradients, taken norm-wise over a tensor, the sum of
    magnitudes is assumed to be of the size of the gradient (its tokens' terms mostly add up). So the losses may
    differ by K * eps relative, each trainable tensor's SGD update by K * eps relative in norm, plus the rounding of
    the stored weights. K counts every target token of the 16 documents plus the vocabulary: an upper bound for one
    step. (Seen on a 2-core AMD EPYC: 4e-6 at most, against a bound of 5e-4.)
    """
    stories = generate_corpus(16, seed=11)
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"text": story_to_text(s)}) for s in stories))
    initial = AutoModel.from_pretrained(tiny_sonar_llm_dir)
    # target tokens: [lang] pieces </s> per sentence
    tokens = sum(len(initial.tokenizer.tokenize(sentence)) + 2 for story in stories for sentence in story)
    rtol = (tokens + initial.config.decoder_config.vocab_size) * torch.finfo(torch.float32).eps
    cache = tmp_path / "hf_datasets"
    # 1 process, in this process (saves an interpreter start): global batch 4 x 2 accumulation = 8
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    spec = importlib.util.spec_from_file_location("example_finetune_ddp", ROOT / "examples" / "finetune.py")
    finetune = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = finetune
    spec.loader.exec_module(finetune)
    assert finetune.main(arguments(tiny_sonar_llm_dir, data, tmp_path / "single", 4, loss_type)) == 0
    # 2 processes over gloo: 2 per device x 2 accumulation x 2 processes = 8
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "examples" / "accelerate" / "cpu_gloo.yaml"), "--main_process_port", str(free_port()),
               str(ROOT / "examples" / "finetune.py"),
               *arguments(tiny_sonar_llm_dir, data, tmp_path / "double", 2, loss_type),
               "--ddp_backend", "gloo"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((tmp_path / "double" / "trainer_state.json").read_text())
    assert state["epoch"] == 1.0  # really 2 processes: 2 steps of 8 documents cover the 16 (1 process: 0.5)
    single, double = losses(tmp_path / "single"), losses(tmp_path / "double")
    assert len(single) == len(double) == 2
    for a, b in zip(single, double):
        assert abs(a - b) <= rtol * abs(a), (single, double, rtol)
    one, two = AutoModel.from_pretrained(tmp_path / "single"), AutoModel.from_pretrained(tmp_path / "double")
    start = dict(initial.named_parameters())
    eps, moved = torch.finfo(torch.float32).eps, 0
    for (name, a), (_, b) in zip(one.named_parameters(), two.named_parameters()):
        update = (a - start[name]).norm()
        if not start[name].requires_grad:  # frozen SONAR: untouched in both runs
            assert update == 0 and torch.equal(a, b), name
            continue
        # (+ rounding: each run stores 2 steps' results in fp32, each within half a unit in the last place, which
        # is at most eps * |weight|: 2 eps |weight| between the runs)
        rounding = 2 * eps * a.norm()
        moved += bool(update > 100 * rounding)
        assert (b - a).norm() <= rtol * update + rounding, (name, float((b - a).norm() / update), rtol)
    assert moved >= 4  # the projections and layers learned well above the rounding: the check has teeth
