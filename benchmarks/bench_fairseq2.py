"""Speed against the real fairseq2: Meta's SONAR and the reference SONAR-LLM loop beside ours, same weights and inputs.

    python benchmarks/bench_fairseq2.py                 # full-size SONAR + 100M backbone, fp32, 2 threads (~15 min)
    python benchmarks/bench_fairseq2.py --packed        # adds our exact oneDNN-packed rows (kernels='packed')
    python benchmarks/bench_fairseq2.py --int8          # adds our opt-in int8 rows (approximate, see BENCHMARKS.md)
    python benchmarks/bench_fairseq2.py --quick         # tiny sizes, seconds, no reference env (CI)

The fairseq2 side runs in the reference environment (`../shared/tools/reference-env.sh refenv`: fairseq2 0.8.1,
sonar-space 0.5.0, torch 2.9.1) as a subprocess, `fairseq2_worker.py`. It builds SONAR with sonar's own factories
(seeded random weights) and a reference SONAR-LLM backbone, saves them in the published checkpoint layouts and
times them. This script converts those files with `conversion/convert_sonar_to_hf.py` and
`conversion/convert_sonar_llm_to_hf.py`, times ours on the same inputs, compares the outputs (ids, beam scores,
embeddings, generated texts) and prints the ratios. The sides run one after the other (each holds 6.7 GB of
weights). Rows:

- SONAR decode, beam 5, `--tokens` tokens per sentence (`</s>` forced at the last position): fairseq2's
  `BeamSearchSeq2SeqGenerator` (what `EmbeddingToTextModelPipeline.predict` runs) on one embedding at a time and on
  `--inputs` at once, against `SonarTextDecoder.decode`;
- SONAR encode of `--inputs` sentences of about 26 tokens: `TextToEmbeddingModelPipeline.predict` one at a time
  and all at once, against `SonarTextEncoder.encode` (median of `--encode-repeats` passes on both sides);
  the decode of `--inputs` at once is the median of `--decode-repeats` passes on both sides (one pass of either
  side varied by up to 17% between runs);
- generation: FusionBrainLab/SONAR-LLM's `generate.py` loop on fairseq2's pipelines, one prompt at a time, timed on
  `--reference-prompts` prompts (its cost is linear in prompts: N prompts cost N x its mean), against
  `model.generate` on 1 and `--prompts` prompts.

`--quick` uses tiny models and, unless `--reference-python` is given, a restatement of the reference on our own
modules in place of fairseq2 (`reference_algorithms.py`): CI exercises the script; those ratios mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from timing import timed  # benchmarks/timing.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FS2_TO_HF = {0: 1, 1: 3, 2: 0, 3: 2}  # <pad>, <unk>, <s>, </s>
SIZES = {
    "full": dict(sonar=dict(d_model=1024, layers=24, heads=16, ffn=8192, vocab=256206),
                 llama=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=16,
                            head_dim=32)),
    "quick": dict(sonar=dict(d_model=64, layers=2, heads=4, ffn=256, vocab=4000),
                  llama=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                             head_dim=16)),
}  # fmt: skip
# The reference repo's SonarLLM_*.json settings besides the sizes.
LLAMA_COMMON = dict(hidden_act="silu", max_position_embeddings=131072, initializer_range=0.02, rms_norm_eps=1e-6,
                    use_cache=True, pretraining_tp=1, tie_word_embeddings=True, rope_theta=500000.0,
                    rope_scaling={"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                                  "original_max_position_embeddings": 8192, "rope_type": "llama3"},
                    attention_bias=False, attention_dropout=0.0, mlp_bias=False)  # fmt: skip


def machine() -> dict:
    info = {}
    for line in open("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_tile", "avx2") if f in info.get("flags", "").split()]
    return {"cpu": info.get("model name", "?"), "isa": isa, "cores": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}  # fmt: skip


def bench_inputs(tokenizer, count: int, prompts: int, target_tokens: int):
    """Encoder inputs of about `target_tokens` tokens (story-world sentences joined) and 3-sentence prompts."""
    from sonar_llm_hf.demo.story_world import generate_corpus
    from sonar_llm_hf.models.tokenization_sonar import encode_source

    stories = generate_corpus(max(count, prompts) + 8, seed=1)
    texts, current = [], []
    for sentence in (s for story in stories for s in story):
        current.append(sentence)
        if len(encode_source(tokenizer, [" ".join(current)], "eng_Latn")[0]) >= target_tokens:
            texts.append(" ".join(current))
            current = []
        if len(texts) == count:
            break
    return texts, [story[:3] for story in stories[:prompts]]


def run(command: list[str], what: str, env=None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"{what} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")


def fairseq2_side(args, spec: dict, work: Path):
    """Build, save and time fairseq2's side in the reference env, convert its files with our CLIs, load ours."""
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    _, seconds = timed(lambda: run([args.reference_python, str(ROOT / "benchmarks" / "fairseq2_worker.py"),
                                    str(work / "spec.json")], "fairseq2_worker.py", env))  # fmt: skip
    print(f"fairseq2 side done in {seconds:.0f} s; converting", file=sys.stderr)
    run([sys.executable, "conversion/convert_sonar_to_hf.py", "--encoder", str(work / "sonar_text_encoder.pt"),
         "--decoder", str(work / "sonar_text_decoder.pt"), "--tokenizer", spec["spm"], "--output", str(work / "sonar"),
         "--num-heads", str(spec["sonar"]["heads"])], "convert_sonar_to_hf.py")  # fmt: skip
    for name in ("sonar_text_encoder.pt", "sonar_text_decoder.pt"):
        (work / name).unlink()  # the converted folders hold the same weights
    run([sys.executable, "conversion/convert_sonar_llm_to_hf.py", "--checkpoint", str(work / "checkpoint_step_0.pt"),
         "--sonar", str(work / "sonar"), "--config", str(work / "SonarLLM_bench.json"), "--output", str(work / "llm")],
        "convert_sonar_llm_to_hf.py")  # fmt: skip
    shutil.rmtree(work / "sonar")
    return load_fairseq2_side(spec, work)


def load_fairseq2_side(spec: dict, work: Path):
    from sonar_llm_hf import SonarLLMForCausalSentenceModeling

    if json.loads((work / "spec.json").read_text()) != spec:
        sys.exit(f"{work} holds a run with other settings; drop --reuse.")
    baseline = json.loads((work / "fairseq2.json").read_text())
    baseline.update(torch.load(work / "fairseq2_tensors.pt", weights_only=True))
    for key in ("decode_b1_ids", "decode_bn_ids", "encode_ids"):
        baseline[key] = [[FS2_TO_HF.get(i, i) for i in row] for row in baseline[key]]
    model = SonarLLMForCausalSentenceModeling.from_pretrained(work / "llm").eval()
    return baseline, model


def restatement_side(args, spec: dict, work: Path):
    """`--quick` without the reference env: our tiny model, and the reference restated on our modules."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import build_model

    from sonar_llm_hf import build_sonar_tokenizer
    from sonar_llm_hf.models.generation_sonar_text import fairseq2_beam_search
    from sonar_llm_hf.models.tokenization_sonar import encode_source, suppressed_token_ids
    from sonar_llm_hf.testing.reference import full_cross_attention, reference_encode, reference_generate

    model = build_model(True, work / "tiny")
    model.tokenizer = tokenizer = build_sonar_tokenizer(spec["spm"])
    with torch.no_grad():  # as fairseq2_worker.shape_decoder_rows: only decodable text, `</s>` only where forced
        model.sonar_decoder.decoder.embed_tokens.weight[len(tokenizer) :] = 0
    encoder, decoder = model.sonar_encoder, model.sonar_decoder
    texts, beam, max_length = spec["encode_texts"], spec["num_beams"], 2 + spec["tokens"]
    suppress = suppressed_token_ids(tokenizer, decoder.config.vocab_size)

    def beam_search(embeddings):
        prompt = decoder.decoder_prompt(embeddings.shape[0], "eng_Latn", tokenizer)
        with full_cross_attention(decoder):
            return fairseq2_beam_search(decoder, embeddings, prompt, beam_size=beam, max_length=max_length,
                                        suppress_ids=suppress, prune_rows=False)  # fmt: skip

    baseline = {
        "encode_ids": [encode_source(tokenizer, [t], "eng_Latn")[0] for t in texts],
        "torch": torch.__version__,
    }
    repeats, ids = spec["encode_repeats"], baseline["encode_ids"]
    # SONAR's pipeline restated (padded batches, torch's products, its pooling): not our `encode` compared with itself
    baseline["encode_b1"], baseline["encode_b1_s"] = timed(
        lambda: reference_encode(encoder, ids, batch_size=1), repeats
    )
    baseline["encode_bn"], baseline["encode_bn_s"] = timed(lambda: reference_encode(encoder, ids), repeats)
    inputs = baseline["encode_bn"][: spec["decode_inputs"]]
    single, baseline["decode_b1_s"] = timed(
        lambda: [beam_search(inputs[i : i + 1]) for i in range(spec["decode_b1_inputs"])]
    )
    baseline["decode_b1_ids"], baseline["decode_b1_scores"] = [s[0][0] for s in single], [s[1][0] for s in single]
    decoded, baseline["decode_bn_s"] = timed(lambda: beam_search(inputs), spec["decode_repeats"])
    baseline["decode_bn_ids"], baseline["decode_bn_scores"] = decoded
    baseline["decode_inputs"] = inputs
    baseline["generate_texts"], baseline["generate_s_per_prompt"], baseline["generate_predictions"] = [], [], []
    for prompt in spec["prompts"][: spec["reference_prompts"]]:
        (new, predicted), seconds = timed(lambda prompt=prompt: reference_generate(
            model, prompt, threshold=spec["eos_threshold"], max_new_sentences=spec["sentences"],
            at_reference_cost=True, num_beams=beam, max_length=max_length, return_predictions=True))  # fmt: skip
        baseline["generate_texts"].append(new)
        baseline["generate_predictions"].append(torch.stack(predicted))
        baseline["generate_s_per_prompt"].append(seconds)
    model.save_pretrained(work / "llm")  # where --packed and --int8 load fresh copies, as on the fairseq2 side
    return baseline, model


def ours_side(spec: dict, model, inputs: torch.Tensor, sonar_only: bool = False) -> dict:
    encoder, decoder = model.sonar_encoder, model.sonar_decoder
    texts, beam, max_length = spec["encode_texts"], spec["num_beams"], 2 + spec["tokens"]
    decode = dict(num_beams=beam, max_length=max_length, return_token_ids=True)
    results = {}
    encoder.encode(texts[:1])  # warm-up
    repeats = spec["encode_repeats"]
    results["encode_b1"], results["encode_b1_s"] = timed(
        lambda: torch.cat([encoder.encode([t], batch_size=1) for t in texts]), repeats
    )
    results["encode_bn"], results["encode_bn_s"] = timed(lambda: encoder.encode(texts, batch_size=len(texts)), repeats)
    decoder.decode(inputs[:1], num_beams=beam, max_length=min(max_length, 6))  # warm-up
    single, results["decode_b1_s"] = timed(lambda: [decoder.decode(inputs[i : i + 1], **decode)[1][0]
                                                    for i in range(spec["decode_b1_inputs"])])  # fmt: skip
    results["decode_b1_ids"] = single
    (_, results["decode_bn_ids"]), results["decode_bn_s"] = timed(
        lambda: decoder.decode(inputs, batch_size=len(inputs), **decode), spec["decode_repeats"])  # fmt: skip
    if sonar_only:
        return results
    options = dict(max_new_sentences=spec["sentences"], eos_threshold=1.0, num_beams=beam, max_length=max_length)
    model.generate(
        spec["prompts"][:1], **{**options, "max_new_sentences": 1, "max_length": min(max_length, 6)}
    )  # warm-up
    out, results["generate_1_s"] = timed(lambda: model.generate(spec["prompts"][:1], **options))
    results["generate_1_texts"] = out.sentences
    out, results["generate_n_s"] = timed(lambda: model.generate(spec["prompts"], **options))
    results["generate_n_texts"] = out.sentences
    results["generate_n_predictions"] = out.predicted_embeddings
    return results


def compare(spec: dict, baseline: dict, ours: dict) -> dict:
    """Ratios (baseline seconds / ours, per sentence) and output agreement."""
    n, one = len(spec["encode_texts"]), spec["decode_b1_inputs"]
    per_sentence = {
        "encode_b1": (baseline["encode_b1_s"] / n, ours["encode_b1_s"] / n),
        "encode_bn": (baseline["encode_bn_s"] / n, ours["encode_bn_s"] / n),
        "decode_b1": (baseline["decode_b1_s"] / one, ours["decode_b1_s"] / one),
        "decode_bn": (baseline["decode_bn_s"] / spec["decode_inputs"], ours["decode_bn_s"] / spec["decode_inputs"]),
    }
    row = {k: {"baseline_s": b, "ours_s": o, "speedup": b / o} for k, (b, o) in per_sentence.items()}
    row["encode_max_abs_diff"] = float(max((baseline["encode_b1"] - ours["encode_b1"]).abs().max(),
                                           (baseline["encode_bn"] - ours["encode_bn"]).abs().max()))  # fmt: skip
    row["decode_b1_same_ids"] = sum(a == b for a, b in zip(baseline["decode_b1_ids"], ours["decode_b1_ids"]))
    row["decode_bn_same_ids"] = sum(a == b for a, b in zip(baseline["decode_bn_ids"], ours["decode_bn_ids"]))
    row["decode_distinct_tokens"] = len({t for ids in baseline["decode_bn_ids"] for t in ids})
    if "generate_1_s" in ours:
        mean_prompt = sum(baseline["generate_s_per_prompt"]) / len(baseline["generate_s_per_prompt"])
        row["generate_1"] = {"baseline_s": baseline["generate_s_per_prompt"][0], "ours_s": ours["generate_1_s"],
                             "speedup": baseline["generate_s_per_prompt"][0] / ours["generate_1_s"]}  # fmt: skip
        prompts = len(spec["prompts"])
        row["generate_n"] = {"prompts": prompts, "baseline_s": mean_prompt * prompts, "ours_s": ours["generate_n_s"],
                             "speedup": mean_prompt * prompts / ours["generate_n_s"],
                             "baseline_measured_prompts": len(baseline["generate_s_per_prompt"])}  # fmt: skip
        reference = baseline["generate_texts"]
        row["generate_same_texts"] = sum(a == b for a, b in zip(reference, ours["generate_n_texts"][: len(reference)]))
        row["generate_1_same_texts"] = int(reference[0] == ours["generate_1_texts"][0])
        if "generate_predictions" in baseline:  # the restatement's predicted embeddings: a random decoder's texts
            pairs = zip(baseline["generate_predictions"], ours["generate_n_predictions"])  # hardly depend on them
            row["generate_prediction_max_abs_diff"] = max(
                float((a - b.float()).abs().max()) if a.shape == b.shape else float("inf") for a, b in pairs
            )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--reference-python", help="the reference env's python (default: refenv/bin/python if present)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inputs", type=int, default=16, help="sentences encoded and embeddings decoded at once")
    parser.add_argument("--decode-b1-inputs", type=int, default=3, help="embeddings decoded one at a time")
    parser.add_argument("--tokens", type=int, default=25, help="tokens per decoded sentence, </s> included")
    parser.add_argument("--num-beams", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--reference-prompts", type=int, default=2)
    parser.add_argument("--sentences", type=int, default=4, help="sentences generated per prompt")
    parser.add_argument("--encode-repeats", type=int, default=3, help="encode rows: median of this many passes")
    parser.add_argument(
        "--decode-repeats", type=int, default=3, help="decode of --inputs at once: median of this many passes"
    )
    parser.add_argument("--int8", action="store_true", help="also time our int8 SONAR (quantize_sonar, approximate)")
    parser.add_argument(
        "--packed", action="store_true", help="also time our oneDNN-packed fp32 SONAR (pack_sonar, exact)"
    )
    parser.add_argument("--work", help="keep the models and fairseq2's results here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="time only ours, on the fairseq2 side kept in --work")
    parser.add_argument(
        "--json", default=None, help="results file (default: benchmarks/results/fairseq2.json; none for --quick)"
    )
    args = parser.parse_args()
    if args.reference_python is None and not args.quick and (ROOT / "refenv" / "bin" / "python").exists():
        args.reference_python = str(ROOT / "refenv" / "bin" / "python")
    if args.reference_python is None and not args.quick:
        sys.exit(
            "No reference env: build it with ../shared/tools/reference-env.sh refenv, or pass --reference-python."
        )
    if args.quick:
        args.inputs, args.decode_b1_inputs, args.tokens, args.prompts, args.reference_prompts, args.sentences = (
            4,
            2,
            6,
            3,
            2,
            2,
        )
        args.encode_repeats = args.decode_repeats = 1
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from sonar_llm_hf import SONAR_LANGUAGES, build_sonar_tokenizer
    from sonar_llm_hf.demo.story_world import generate_corpus
    from sonar_llm_hf.testing.tiny import train_tiny_spm

    load = os.getloadavg()
    size = SIZES["quick" if args.quick else "full"]
    if args.reuse and not args.work:
        sys.exit("--reuse needs --work, the folder of an earlier run.")
    with contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = [s for story in generate_corpus(400, seed=0) for s in story]
        spm = train_tiny_spm(work / "spm.model", corpus, vocab_size=300 if args.quick else 2000)
        texts, prompts = bench_inputs(
            build_sonar_tokenizer(spm), args.inputs, args.prompts, 26 if not args.quick else 10
        )
        spec = dict(work=str(work), spm=str(spm), sonar=size["sonar"],
                    llama_config={**LLAMA_COMMON, **size["llama"]}, seed=0, threads=args.threads,
                    num_beams=args.num_beams, tokens=args.tokens, encode_texts=texts, decode_inputs=args.inputs,
                    decode_b1_inputs=args.decode_b1_inputs, prompts=prompts, reference_prompts=args.reference_prompts,
                    sentences=args.sentences, encode_repeats=args.encode_repeats,
                    decode_repeats=args.decode_repeats, eos_threshold=1.01, eos_sentence="End of sequence.",
                    languages=list(SONAR_LANGUAGES))  # fmt: skip
        if args.reuse:
            baseline, model = load_fairseq2_side(spec, work)
            kind = "fairseq2"
        elif args.reference_python:
            baseline, model = fairseq2_side(args, spec, work)
            kind = "fairseq2"
        else:
            baseline, model = restatement_side(args, spec, work)
            kind = "restatement"
        from sonar_llm_hf.speed import prepare_for_inference

        inputs = baseline["decode_inputs"]
        ours = ours_side(spec, prepare_for_inference(model, kernels="onednn"), inputs)  # the CLI's --no-pack
        row = compare(spec, baseline, ours)
        if args.packed:  # exact: every row, generation included, and outputs compared with fairseq2's
            from sonar_llm_hf import SonarLLMForCausalSentenceModeling

            model = None  # one full-size model in memory at a time
            model = prepare_for_inference(SonarLLMForCausalSentenceModeling.from_pretrained(work / "llm"), "packed")
            row["packed"] = compare(spec, baseline, ours_side(spec, model, inputs))
        if args.int8:
            from sonar_llm_hf import SonarLLMForCausalSentenceModeling

            model = None
            model = prepare_for_inference(SonarLLMForCausalSentenceModeling.from_pretrained(work / "llm"), "int8")
            int8 = ours_side(spec, model, inputs, sonar_only=True)
            row["int8"] = {k: {"ours_fp32_s": ours[f"{k}_s"], "int8_s": int8[f"{k}_s"],
                               "speedup": ours[f"{k}_s"] / int8[f"{k}_s"]}
                           for k in ("encode_b1", "encode_bn", "decode_b1", "decode_bn")}  # fmt: skip
            row["int8"]["decode_bn_same_ids"] = sum(
                a == b for a, b in zip(ours["decode_bn_ids"], int8["decode_bn_ids"])
            )
            row["int8"]["encode_bn_min_cosine"] = float(
                torch.nn.functional.cosine_similarity(ours["encode_bn"], int8["encode_bn"]).min()
            )
    results = {"baseline": kind, "baseline_torch": baseline.get("torch"), "ours_torch": torch.__version__,
               "machine": machine(), "load_average_before": load, "load_average_after": os.getloadavg(),
               "threads": args.threads, "quick": args.quick,
               "settings": {k: v for k, v in spec.items() if k not in ("work", "spm")}, **row}  # fmt: skip
    report(results, args)
    path = Path(args.json) if args.json else None if args.quick else RESULTS / "fairseq2.json"
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items() if k != "settings"}))


def report(r: dict, args) -> None:
    name = "fairseq2" if r["baseline"] == "fairseq2" else "restatement (not fairseq2)"
    n, one = args.inputs, args.decode_b1_inputs
    print(f"{r['machine']['cpu']} ({', '.join(r['machine']['isa'])}), {r['threads']} threads, fp32; load average "
          f"{r['load_average_before'][0]:.2f} before, {r['load_average_after'][0]:.2f} after")  # fmt: skip
    print(f"| s per sentence | {name} | ours | speed-up |\n|---|---|---|---|")
    labels = (("decode_b1", f"decode, one at a time ({one})"), ("decode_bn", f"decode, {n} at once"),
              ("encode_b1", f"encode, one at a time ({n})"), ("encode_bn", f"encode, {n} at once"))  # fmt: skip
    for key, label in labels:
        print(f"| {label} | {r[key]['baseline_s']:.3f} | {r[key]['ours_s']:.3f} | {r[key]['speedup']:.2f}x |")
    if "generate_n" in r:
        g1, gn = r["generate_1"], r["generate_n"]
        print(
            f"| generate, 1 prompt (s per prompt) | {g1['baseline_s']:.2f} | {g1['ours_s']:.2f} | "
            f"{g1['speedup']:.2f}x |"
        )
        print(
            f"| generate, {gn['prompts']} prompts (s) | {gn['baseline_s']:.2f} | {gn['ours_s']:.2f} | "
            f"{gn['speedup']:.2f}x |"
        )
    print(f"same ids: decode {r['decode_b1_same_ids']}/{one} one at a time, {r['decode_bn_same_ids']}/{n} at once "
          f"({r['decode_distinct_tokens']} distinct tokens); embeddings max abs diff {r['encode_max_abs_diff']:.2g}; "
          f"generated texts same for {r.get('generate_same_texts', 0)}/{args.reference_prompts} prompts")  # fmt: skip
    if "packed" in r:
        p = r["packed"]
        print(f"| packed (pack_sonar) | {name} | ours packed | speed-up |\n|---|---|---|---|")
        for key in ("decode_b1", "decode_bn", "encode_b1", "encode_bn"):
            print(
                f"| {key} (s per sentence) | {p[key]['baseline_s']:.3f} | {p[key]['ours_s']:.3f} | "
                f"{p[key]['speedup']:.2f}x |"
            )
        print(f"| generate, {p['generate_n']['prompts']} prompts (s) | {p['generate_n']['baseline_s']:.2f} | "
              f"{p['generate_n']['ours_s']:.2f} | {p['generate_n']['speedup']:.2f}x |")  # fmt: skip
        print(f"packed: same ids {p['decode_b1_same_ids']}/{one} and {p['decode_bn_same_ids']}/{n}; embeddings "
              f"max abs diff {p['encode_max_abs_diff']:.2g}; generated texts same for "
              f"{p['generate_same_texts']}/{args.reference_prompts}")  # fmt: skip
    if "int8" in r:
        q = r["int8"]
        print("| int8 vs our fp32 | fp32 | int8 | speed-up |\n|---|---|---|---|")
        for key in ("decode_b1", "decode_bn", "encode_b1", "encode_bn"):
            print(
                f"| {key} (s, total) | {q[key]['ours_fp32_s']:.2f} | {q[key]['int8_s']:.2f} | "
                f"{q[key]['speedup']:.2f}x |"
            )
        print(
            f"int8: decode same ids {q['decode_bn_same_ids']}/{n} (random weights), encode min cosine "
            f"{q['encode_bn_min_cosine']:.4f}"
        )


if __name__ == "__main__":
    main()
