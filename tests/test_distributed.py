"""Data parallelism: 2 CPU processes (gloo) give the same loss and weights as 1 process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModel

from sonar_llm_hf.story_world import generate_corpus, story_to_text

ROOT = Path(__file__).parents[1]


def run(tmp_path, name, launcher, per_device, data, model_dir, extra=()):
    out = tmp_path / name
    command = [*launcher, str(ROOT / "examples" / "finetune.py"), "--model_name_or_path", str(model_dir),
               "--dataset", str(data), "--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size",
               str(per_device), "--learning_rate", "1e-2", "--logging_steps", "1", "--report_to", "none", "--use_cpu",
               "--save_strategy", "no", "--seed", "0", "--dataloader_num_workers", "0", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [entry["loss"] for entry in history if "loss" in entry], out


def test_two_gloo_processes_equal_one(tiny_sonar_llm_dir, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"text": story_to_text(s)}) for s in generate_corpus(16, seed=11)))
    single, single_dir = run(tmp_path, "single", [sys.executable], 4, data, tiny_sonar_llm_dir)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    double, double_dir = run(tmp_path, "double", torchrun, 2, data, tiny_sonar_llm_dir, ["--ddp_backend", "gloo"])
    assert len(single) == len(double) == 2
    for a, b in zip(single, double):
        assert abs(a - b) < 1e-4, (single, double)
    one, two = AutoModel.from_pretrained(single_dir), AutoModel.from_pretrained(double_dir)
    for (name, a), (_, b) in zip(one.named_parameters(), two.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
