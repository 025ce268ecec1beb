"""Does the demo model hold up on ordinary prompts? Before (the reference loop) and after (its saved settings).

    python benchmarks/bench_demo_generation.py [--model sonar_llm_hf/demo/demo_model] [--prompts 100]
                                               [--seeds 5] [--temperatures 0 0.05 0.1 0.2] [--out FILE.json] [--quick]

1. 100 held-out stories of the demo world (the last 100 of its held-out split, as `train_demo_world.py` measures
   its end rate), prompt = their first 2 sentences: loop rate (share stopped by `max_sentences`), empty
   continuations, documents that end by themselves, mean length (prompt + continuation) against the same stories',
   name/pronoun agreement over generated sentences (`sonar_llm_hf.demo.ordinary_prompts.agrees`), special sentences
   kept, and sentences said more than twice;
2. the 24 ordinary prompts (`ORDINARY_PROMPTS`): how many continue with 2-15 sentences, say no sentence more than
   twice, end by themselves and keep no special sentence (all four: "ok");
3. latent sampling on the 24 prompts: for each `latent_temperature`, distinct continuations per prompt over
   `--seeds` seeds, with the "after" settings otherwise.

"before" passes the reference's controls explicitly (`CONTROL_DEFAULTS`: no repetition check, no minimum, no
noise), "after" uses the model's generation_config.json as `sonar-llm generate` does. Deterministic (beam search,
seeded noise); about 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ruff: noqa: E402

import torch
from transformers import AutoModel

import sonar_llm_hf  # noqa: F401 (registers the model)
from sonar_llm_hf.demo import PACKAGED_DEMO
from sonar_llm_hf.demo.ordinary_prompts import (
    ORDINARY_PROMPTS,
    SPECIAL_SENTENCES,
    agrees,
    continuation_checks,
    main_character,
)
from sonar_llm_hf.demo.story_world import generate_corpus, split_corpus
from sonar_llm_hf.models.generation_sonar_llm import CONTROL_DEFAULTS

REFERENCE = dict(CONTROL_DEFAULTS)  # the reference loop: every control off


def heldout_prompts(count: int) -> tuple[list[list[str]], float]:
    """The first 2 sentences of the last `count` held-out stories, and those stories' mean length."""
    _, heldout = split_corpus(generate_corpus(20000, 0), 0.1, 0)
    stories = [s[:32] for s in heldout[-count:]]
    return [s[:2] for s in stories], sum(map(len, stories)) / len(stories)


def document_figures(model, prompts: list[list[str]], options: dict) -> dict:
    out = model.generate(prompts, **options)
    generated = [s for sentences in out.sentences for s in sentences]
    agreeing = sum(agrees(s, main_character(p)) for p, ss in zip(prompts, out.sentences) for s in ss)
    n = len(prompts)
    return {
        "loop_rate": sum(r == "max_sentences" for r in out.stop_reasons) / n,
        "empty_rate": sum(not s for s in out.sentences) / n,
        "end_rate": sum(out.finished) / n,
        "mean_length": sum(len(p) + len(s) for p, s in zip(prompts, out.sentences)) / n,
        "agreement": agreeing / max(1, len(generated)),
        "generated_sentences": len(generated),
        "special_sentences": sum(s.strip() in SPECIAL_SENTENCES for s in generated),
        "said_more_than_twice": sum(any(c > 2 for c in Counter(s).values()) for s in out.sentences),
        "stop_reasons": dict(Counter(out.stop_reasons)),
    }


def ordinary_figures(model, options: dict) -> dict:
    out = model.generate(ORDINARY_PROMPTS, **options)
    checks = [continuation_checks(p, s, f) for p, s, f in zip(out.prompt_sentences, out.sentences, out.finished)]
    figures = {key: sum(c[key] for c in checks) for key in ("ok", "length_ok", "no_triple", "ended", "no_special")}
    figures["empty"] = sum(not s for s in out.sentences)
    figures["agreement"] = sum(c["agreeing"] for c in checks) / max(1, sum(c["length"] for c in checks))
    figures["failing"] = {p: s for p, s, c in zip(ORDINARY_PROMPTS, out.sentences, checks) if not c["ok"]}
    return figures


def diversity(model, seeds: int, temperatures: list[float]) -> list[dict]:
    rows = []
    for temperature in temperatures:
        runs = [model.generate(ORDINARY_PROMPTS, latent_temperature=temperature, seed=seed) for seed in range(seeds)]
        distinct = [len({tuple(run.sentences[i]) for run in runs}) for i in range(len(ORDINARY_PROMPTS))]
        ok = [sum(continuation_checks(p, run.sentences[i], run.finished[i])["ok"]
                  for i, p in enumerate(run.prompt_sentences)) for run in runs]  # fmt: skip
        agreeing = sum(agrees(s, main_character(p)) for run in runs
                       for p, ss in zip(run.prompt_sentences, run.sentences) for s in ss)  # fmt: skip
        total = sum(len(ss) for run in runs for ss in run.sentences)
        rows.append({"latent_temperature": temperature, "distinct_per_prompt": sum(distinct) / len(distinct),
                     "ok_min": min(ok), "ok_mean": sum(ok) / len(ok),
                     "agreement": agreeing / max(1, total)})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(PACKAGED_DEMO))
    parser.add_argument("--prompts", type=int, default=100, help="held-out stories")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per latent temperature")
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.0, 0.05, 0.1, 0.2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true", help="10 held-out prompts, 2 seeds, temperatures 0 and 0.1")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.seeds, args.temperatures = 10, 2, [0.0, 0.1]
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = AutoModel.from_pretrained(args.model).eval()
    prompts, story_length = heldout_prompts(args.prompts)
    saved = {key: getattr(model.generation_config, key, None) for key in CONTROL_DEFAULTS}
    results = {"model": args.model, "after_settings": saved, "heldout_story_mean_length": story_length}
    for name, options in (("before", REFERENCE), ("after", {})):
        results[name] = {"heldout": document_figures(model, prompts, options),
                         "ordinary": ordinary_figures(model, options)}  # fmt: skip
    results["diversity"] = diversity(model, args.seeds, args.temperatures)
    results["seconds"] = time.time() - t0

    print(f"{args.prompts} held-out prompts (first 2 sentences; those stories average {story_length:.2f} sentences) "
          f"and the 24 ordinary prompts; after = {json.dumps(saved)}")  # fmt: skip
    print(
        "| settings | loop rate | empty | ended | mean length | agreement | special kept | >2x | 24 prompts: ok "
        "| 2-15 | no >2x | ended | no special | empty | agreement |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in ("before", "after"):
        h, o = results[name]["heldout"], results[name]["ordinary"]
        print(f"| {name} | {h['loop_rate']:.0%} | {h['empty_rate']:.0%} | {h['end_rate']:.0%} | "
              f"{h['mean_length']:.2f} | {h['agreement']:.1%} | {h['special_sentences']} | "
              f"{h['said_more_than_twice']} | {o['ok']}/24 | {o['length_ok']} | {o['no_triple']} | {o['ended']} | "
              f"{o['no_special']} | {o['empty']} | {o['agreement']:.1%} |")  # fmt: skip
    print(
        f"\n| latent_temperature | distinct continuations per prompt (of {args.seeds} seeds) | ok of 24 (min / mean) "
        "| agreement |"
    )
    print("|---|---|---|---|")
    for row in results["diversity"]:
        print(f"| {row['latent_temperature']} | {row['distinct_per_prompt']:.2f} | {row['ok_min']} / "
              f"{row['ok_mean']:.1f} | {row['agreement']:.1%} |")  # fmt: skip
    for name in ("before", "after"):
        for prompt, sentences in results[name]["ordinary"]["failing"].items():
            print(f"{name} fails: {prompt!r} -> {sentences}")
    print(f"({results['seconds']:.0f} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
