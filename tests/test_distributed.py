"""Data parallelism: `accelerate launch` with the shipped CPU config (2 processes over gloo) gives the same losses and
weights as 1 process with the same global batch, for every loss type."""

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
            "--learning_rate", "1e-2", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "--save_strategy",
            "no", "--seed", "0", "--dataloader_num_workers", "0", "--disable_tqdm", "true",
            "--loss_type", loss_type, "--optim", "sgd"]  # fmt: skip


def losses(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry]


@pytest.mark.parametrize("loss_type", ["ce", "ce+mse"])  # "ce+mse" covers the MSE term
def test_two_gloo_processes_equal_one(tiny_sonar_llm_dir, tmp_path, monkeypatch, loss_type):
    """Each loss is a sum over target tokens divided by Trainer's count gathered over both processes, so the ragged
    documents (different sentence and token counts per process) give the same step as one process."""
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"text": story_to_text(s)}) for s in generate_corpus(16, seed=11)))
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
        assert abs(a - b) < 1e-4, (single, double)
    # The claim is about gradients: both runs sum the same per-token terms, in another order (per process, then
    # all-reduced). Under SGD an update is lr x gradient, so the runs' updates differ by lr x that reordering error.
    # A float32 sum of n terms reordered changes by at most about n x eps x (sum of |terms|); the tiny model's
    # gradients sum at most ~10^4 terms, so 1e4 x 6e-8 ~ 6e-4 of the update's scale bounds it (1e-3 below). (Adam
    # would divide each coordinate by its own gradient's RMS, turning a 1e-9 gradient difference on a coordinate
    # whose gradient is ~0 into an O(lr) step: that is why comparing Adam's weights failed on another CPU.)
    start = AutoModel.from_pretrained(tiny_sonar_llm_dir)
    one, two = AutoModel.from_pretrained(tmp_path / "single"), AutoModel.from_pretrained(tmp_path / "double")
    trained = 0
    for (name, a), (_, b), (_, w0) in zip(one.named_parameters(), two.named_parameters(), start.named_parameters()):
        update_one, update_two = a - w0, b - w0
        scale = float(update_one.abs().max())
        if scale == 0:  # frozen SONAR: no update on either side
            assert torch.equal(update_two, update_one), name
            continue
        trained += 1
        difference = float((update_one - update_two).abs().max())
        # plus storing each final weight in float32: half an ulp of |w| on each side
        rounding = torch.finfo(torch.float32).eps * float(torch.maximum(a.abs(), b.abs()).max())
        assert difference <= 1e-3 * scale + rounding, (name, difference, scale, rounding)
    assert trained > 0
