"""Why the beam search floors shifted logits before `exp`: torch's CPU `exp` on one chunk of a step's logits.

    python benchmarks/bench_exp_floor.py            # 80 beam rows x 16,384 ids, as one vocabulary chunk of a step
    python benchmarks/bench_exp_floor.py --quick    # small, seconds (CI)

For logits of a narrow and of a wide spread (shifted by their row maximum, as the beam search's log-sum-exp does),
times `exp_` alone, `exp_` after `clamp_min_(EXP_FLOOR)` (what `fairseq2_beam_search` runs) and `log_softmax`
(fairseq2's route), checks that the floored sums equal the plain ones, and prints the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sonar_llm_hf.models.generation_sonar_text import EXP_FLOOR, VOCAB_CHUNK


def median_ms(fn, prepare, repeats: int) -> float:
    """Median milliseconds of `fn()` over `repeats` calls, `prepare()` (untimed) before each."""
    seconds = []
    for _ in range(repeats + 1):
        prepare()
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return 1e3 * sorted(seconds[1:])[repeats // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=80, help="beam rows (16 inputs x beam 5)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, width, repeats = (8, 1024, 3) if args.quick else (args.rows, VOCAB_CHUNK, args.repeats)
    generator = torch.Generator().manual_seed(0)
    results = {"rows": rows, "ids": width, "exp_floor": EXP_FLOOR, "threads": args.threads}
    print(f"| logit spread (std) | ids below {EXP_FLOOR} | exp_ ms | floor + exp_ ms | log_softmax ms | speed-up |")
    print("|---|---|---|---|---|---|")
    for spread in (3.0, 40.0):
        logits = torch.randn(rows, width, generator=generator) * spread
        shifted = logits - logits.amax(-1, keepdim=True)
        work = torch.empty_like(shifted)
        reset = lambda: work.copy_(shifted)  # noqa: E731
        plain = median_ms(lambda: work.exp_(), reset, repeats)
        floored = median_ms(lambda: work.clamp_min_(EXP_FLOOR).exp_(), reset, repeats)
        softmax = median_ms(lambda: torch.log_softmax(logits, dim=-1), lambda: None, repeats)
        same = torch.equal(shifted.exp().sum(-1), shifted.clamp_min(EXP_FLOOR).exp().sum(-1))
        below = float((shifted < EXP_FLOOR).float().mean())
        results[f"std_{spread:g}"] = {
            "share_below_floor": below,
            "exp_ms": plain,
            "floor_exp_ms": floored,
            "log_softmax_ms": softmax,
            "speedup": plain / floored,
            "same_sums": same,
        }
        print(f"| {spread:g} | {below:.1%} | {plain:.2f} | {floored:.2f} | {softmax:.2f} | {plain / floored:.1f}x |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
