"""One training step (forward + backward): the reference loss computation against ours, tokens/s and peak memory.

    python benchmarks/bench_train.py                 # full-size SONAR decoder, 100M backbone, fp32
    python benchmarks/bench_train.py --quick         # reduced sizes (CI)

Reference: a Python loop over sentences, tokenizing on the fly, full 256k-vocabulary logits. Ours: the model's
loss (chunked vocabulary projection, gradients taken in the same pass), as is ("ours") and with activation
checkpointing ("ours-checkpointed": backbone layers, and the frozen SONAR decoder in sentence groups), which trades
a second decoder forward for memory. Each configuration runs in a fresh subprocess, whose peak resident memory
(VmHWM) is reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def one_config(quick: bool, side: str, batch: int, sentences: int, steps: int) -> dict:
    import torch
    from common import build_model

    from sonar_llm_hf import SonarLLMDataCollator
    from sonar_llm_hf.demo.story_world import generate_corpus
    from sonar_llm_hf.models.tokenization_sonar import encode_target
    from sonar_llm_hf.testing.reference import full_cross_attention, reference_loss

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(quick, tmp)
    model.train()
    stories = [(s * 4)[:sentences] for s in generate_corpus(batch, seed=2)]
    torch.manual_seed(0)
    embeddings = torch.randn(batch, sentences, model.config.embed_dim) * 0.05
    features = [{"sentence_embeddings": embeddings[b].tolist(), "labels": encode_target(model.tokenizer, stories[b])}
                for b in range(batch)]  # fmt: skip
    inputs = SonarLLMDataCollator()(features)
    if side == "ours-checkpointed":
        model.activation_checkpointing_enable()
    times, loss = [], None
    for _ in range(steps):
        start = time.perf_counter()
        if side == "reference":
            with full_cross_attention(model.sonar_decoder):  # fairseq2 attends even to a one-vector memory
                loss, tokens = reference_loss(model, inputs["sentence_embeddings"], stories, duplicate_final_eos=False,
                                              return_count=True)  # fmt: skip
        else:
            out = model(**inputs)
            loss, tokens = out.loss, int(out.num_target_tokens)
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    step = sum(times) / steps  # full-size steps take tens of seconds: warm-up costs are negligible
    return {"side": side, "batch": batch, "sentences": sentences, "loss": float(loss), "target_tokens": tokens,
            "s_per_step": step, "tokens_per_s": tokens / step, "peak_rss_gib": peak_rss_gib()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sentences", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--reference-batches", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--ours-batches", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--checkpointed-batches", type=int, nargs="*", default=[4, 8])
    parser.add_argument("--json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration
    args = parser.parse_args()
    if args.one:
        side, batch = args.one.split(":")
        print(json.dumps(one_config(args.quick, side, int(batch), args.sentences, args.steps)))
        return
    if args.quick:
        args.reference_batches, args.ours_batches, args.checkpointed_batches, args.sentences = [2], [2], [2], 4
    rows = []
    sides = (("reference", args.reference_batches), ("ours", args.ours_batches),
             ("ours-checkpointed", args.checkpointed_batches))  # fmt: skip
    for side, batches in sides:
        for batch in batches:
            command = [sys.executable, __file__, "--one", f"{side}:{batch}", "--sentences", str(args.sentences),
                       "--steps", str(args.steps)] + (["--quick"] if args.quick else [])  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent)
            if result.returncode != 0:
                rows.append({"side": side, "batch": batch, "error": result.stderr.strip().splitlines()[-1:]})
            else:
                rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| side | batch | target tokens | s/step | tokens/s | peak RSS GiB | loss |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        if "error" in r:
            print(f"| {r['side']} | {r['batch']} | failed: {r['error']} | | | | |")
        else:
            print(f"| {r['side']} | {r['batch']} | {r['target_tokens']} | {r['s_per_step']:.2f} | "
                  f"{r['tokens_per_s']:.1f} | {r['peak_rss_gib']:.2f} | {r['loss']:.5f} |")  # fmt: skip
    same = [(r, o) for r in rows for o in rows if r["side"] == "reference" and o["side"] != "reference"
            and r["batch"] == o["batch"] and "loss" in r and "loss" in o]  # fmt: skip
    for r, o in same:
        print(
            f"{o['side']} batch {r['batch']}: loss difference {abs(r['loss'] - o['loss']):.2e}, "
            f"speed ratio {o['tokens_per_s'] / r['tokens_per_s']:.2f}x, "
            f"memory ratio {o['peak_rss_gib'] / r['peak_rss_gib']:.2f}"
        )
    print(json.dumps(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
