"""Generation speed: the reference loop against ours (KV cache, batched prompts), same weights and settings.

    python benchmarks/bench_generate.py              # 100M backbone + full-size SONAR, 16 prompts, fp32, CPU
    python benchmarks/bench_generate.py --quick      # reduced sizes, seconds (CI)
    python benchmarks/bench_generate.py --device cuda --dtype bfloat16

Every generated sentence has the same length on both sides (`--tokens`, `</s>` forced at the last position), beam 5
by default. The reference runs on `--reference-prompts` prompts and is reported per sentence (its cost is linear
in prompts). The floor is the FLOPs one sentence needs divided by this machine's large-matmul rate.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch
from common import (
    backbone_flops_per_position,
    build_model,
    decoder_flops_per_token,
    encoder_flops_per_token,
    instrument,
    matmul_gflops,
)

from sonar_llm_hf.demo.story_world import generate_corpus
from sonar_llm_hf.speed import prepare_for_inference
from sonar_llm_hf.testing.reference import reference_generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--reference-prompts", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=4, help="sentences generated per prompt")
    parser.add_argument("--tokens", type=int, default=25, help="tokens per generated sentence, </s> included")
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.reference_prompts, args.sentences, args.tokens = 4, 2, 2, 8
    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(args.quick, tmp, dtype=dtype, device=args.device)
    prompts = [story[:3] for story in generate_corpus(args.prompts, seed=1)]
    decode = dict(num_beams=args.num_beams, max_length=2 + args.tokens)
    eos_never = 1.01  # a cosine never reaches it: every prompt gets --sentences sentences on both sides

    # (a) the reference loop, one prompt at a time
    reference_generate(
        model, prompts[0], max_new_sentences=1, threshold=eos_never, at_reference_cost=True, **decode
    )  # warm-up
    start = time.perf_counter()
    reference_texts, reference_predictions = [], []
    for prompt in prompts[: args.reference_prompts]:
        texts, predicted = reference_generate(model, prompt, max_new_sentences=args.sentences, threshold=eos_never,
                                              at_reference_cost=True, return_predictions=True, **decode)  # fmt: skip
        reference_texts.append(texts)
        reference_predictions.append(torch.stack(predicted))
    reference_time = time.perf_counter() - start
    reference_sentences = sum(len(texts) for texts in reference_texts)
    reference_per_sentence = reference_time / reference_sentences

    # (b) ours: all prompts in one call, KV cache; decode and encode instrumented
    prepare_for_inference(model, kernels="onednn")  # ours as the CLI runs it with --no-pack
    model.generate(prompts[:2], max_new_sentences=1, eos_threshold=1.0, **decode)  # warm-up
    totals: dict[str, float] = {}
    instrument(model, totals)
    start = time.perf_counter()
    out = model.generate(prompts, max_new_sentences=args.sentences, eos_threshold=1.0, **decode)
    ours_time = time.perf_counter() - start
    ours_sentences = sum(len(s) for s in out.sentences)
    ours_per_sentence = ours_time / ours_sentences

    # the floor: FLOPs of one sentence / large-matmul rate
    config = model.config
    flops = (backbone_flops_per_position(config)
             + args.num_beams * args.tokens * decoder_flops_per_token(config.decoder_config)
             + (args.tokens + 1) * encoder_flops_per_token(config.encoder_config))  # fmt: skip
    rate = matmul_gflops(args.device, dtype)
    floor = flops / (rate * 1e9)
    sonar_share = (totals.get("decode", 0) + totals.get("encode", 0)) / ours_time
    results = {
        "device": args.device, "dtype": args.dtype, "quick": args.quick, "prompts": args.prompts,
        "sentences_per_prompt": args.sentences, "tokens_per_sentence": args.tokens, "num_beams": args.num_beams,
        "reference_sentences_per_s": 1 / reference_per_sentence, "ours_sentences_per_s": 1 / ours_per_sentence,
        "speedup": reference_per_sentence / ours_per_sentence,
        "reference_s_per_sentence": reference_per_sentence, "ours_s_per_sentence": ours_per_sentence,
        "ours_share_sonar_decode": totals.get("decode", 0) / ours_time,
        "ours_share_sonar_encode": totals.get("encode", 0) / ours_time, "ours_share_outside_sonar": 1 - sonar_share,
        "gflop_per_sentence": flops / 1e9, "matmul_gflops": rate, "floor_s_per_sentence": floor,
        "ours_over_floor": ours_per_sentence / floor,
        # the timed runs computed the same documents: the backbone's predictions (a random model's decoded texts
        # barely depend on them) and the sentences
        "reference_prompts": len(reference_texts),
        "same_texts": sum(a == b for a, b in zip(reference_texts, out.sentences)),
        "prediction_max_abs_diff": max(float((r - o.float()).abs().max()) if r.shape == o.shape else float("inf")
                                       for r, o in zip(reference_predictions, out.predicted_embeddings)),
        "prediction_max_abs": max(float(r.abs().max()) for r in reference_predictions),
    }  # fmt: skip
    print("| | reference | ours |\n|---|---|---|")
    print(f"| s / sentence | {reference_per_sentence:.3f} | {ours_per_sentence:.3f} |")
    print(f"| sentences / s | {1 / reference_per_sentence:.3f} | {1 / ours_per_sentence:.3f} |")
    print(
        f"speedup {results['speedup']:.2f}x; ours: SONAR decode {results['ours_share_sonar_decode']:.1%}, "
        f"encode {results['ours_share_sonar_encode']:.1%}, outside SONAR {results['ours_share_outside_sonar']:.1%}"
    )
    print(f"floor: {flops / 1e9:.1f} GFLOP per sentence at {rate:.0f} GFLOP/s = {floor:.3f} s; "
          f"ours is {results['ours_over_floor']:.2f}x the floor")  # fmt: skip
    print(f"same sentences as the reference on {results['same_texts']} of {len(reference_texts)} prompts; predicted "
          f"embeddings within {results['prediction_max_abs_diff']:.1e}")  # fmt: skip
    print(json.dumps(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
