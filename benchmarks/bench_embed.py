"""Corpus embedding speed: ours (`sonar-llm embed`'s bucketed encoder) against fairseq2's pipeline, same run.

    python benchmarks/bench_embed.py [--sentences 10000] [--max-tokens 4096] [--threads 2] [--work DIR]
    python benchmarks/bench_embed.py --quick          # tiny encoder, seconds, no reference env (CI)

Same `--sentences` sentences of mixed lengths (1 to 8 story-world sentences joined: about 8 to 120 tokens), fp32,
full-size SONAR encoder with seeded random weights from sonar's own factory, converted by
`conversion/convert_sonar_to_hf.py`. Rows, each in its own process (so each peak RSS is its own):

- fairseq2: `TextToEmbeddingModelPipeline.predict(batch_size=None, batch_max_tokens=--max-tokens)` in the reference
  env (`fairseq2_embed_worker.py`; its process builds the model with the factory instead of loading it);
- ours: `encode_bucketed` (what `sonar-llm embed` runs): length buckets of at most `--max-tokens` padded tokens,
  padding-free layers, oneDNN products, `from_pretrained` of the converted safetensors;
- ours without bucketing: the same encoder on fixed batches of `--batch-size` sentences in input order.

Times include tokenization on both sides and follow a warm-up. Outputs are compared with fairseq2's (max abs diff).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"full": dict(d_model=1024, layers=24, heads=16, ffn=8192, vocab=256206),
         "quick": dict(d_model=64, layers=2, heads=4, ffn=256, vocab=4000)}  # fmt: skip


def status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def mixed_sentences(count: int, seed: int = 0) -> list[str]:
    from sonar_llm_hf.demo.story_world import generate_corpus

    pool = [s for story in generate_corpus(max(64, count // 4), seed=seed) for s in story]
    rng = random.Random(seed)
    return [" ".join(rng.choice(pool) for _ in range(rng.randint(1, 8))) for _ in range(count)]


def ours(variant: str, folder: str, spec_path: str) -> None:
    """One of our rows, in this process: embeddings and seconds to `<work>/ours_<variant>.*`."""
    import torch

    from sonar_llm_hf import SonarTextEncoder
    from sonar_llm_hf.embedding import encode_bucketed
    from sonar_llm_hf.models.tokenization_sonar import encode_source

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from timing import timed

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.set_grad_enabled(False)
    from sonar_llm_hf.speed import prepare_for_inference

    encoder = prepare_for_inference(SonarTextEncoder.from_pretrained(folder), kernels="onednn")  # as `embed` runs it
    tokenizer = encoder.tokenizer

    def run(texts):
        ids = encode_source(tokenizer, texts, "eng_Latn")
        if variant == "bucketed":
            return encode_bucketed(encoder, ids, spec["max_tokens"])
        size = spec["batch_size"]
        chunks = [ids[i : i + size] for i in range(0, len(ids), size)]  # input order: no bucketing across batches
        return torch.cat([encoder.encode_token_ids(chunk, batch_size=size) for chunk in chunks])

    run(spec["texts"][: spec["warmup"]])
    rss_ready = status("VmRSS")
    embeddings, seconds = timed(lambda: run(spec["texts"]))
    work = Path(spec["work"])
    torch.save(embeddings.contiguous(), work / f"ours_{variant}.pt")
    result = {"seconds": seconds, "rss_ready": rss_ready, "peak_rss": status("VmHWM")}
    (work / f"ours_{variant}.json").write_text(json.dumps(result))


def run(command: list[str], what: str, env=None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        sys.exit(f"{what} failed (exit {result.returncode}):\n{result.stderr[-4000:]}")


def build_quick_encoder(spec: dict, folder: Path) -> None:
    """--quick without the reference env: a tiny random encoder of our class stands in for the converted one."""
    import torch

    from sonar_llm_hf import SonarTextEncoder, SonarTextEncoderConfig, build_sonar_tokenizer

    size = spec["sonar"]
    config = SonarTextEncoderConfig(d_model=size["d_model"], encoder_layers=size["layers"],
                                    encoder_attention_heads=size["heads"], encoder_ffn_dim=size["ffn"],
                                    vocab_size=size["vocab"])  # fmt: skip
    torch.manual_seed(spec["seed"])
    encoder = SonarTextEncoder(config)
    encoder.tokenizer = build_sonar_tokenizer(spec["spm"])
    encoder.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=10000)
    parser.add_argument("--max-tokens", type=int, default=4096, help="tokens per batch, both sides")
    parser.add_argument("--batch-size", type=int, default=32, help="sentences per batch without bucketing")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reference-python", help="the reference env's python (default /work/refenv or ./refenv)")
    parser.add_argument("--work", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--json", default=None, help="results file (default: benchmarks/results/embed.json)")
    parser.add_argument("--_ours", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._ours:
        return ours(*args._ours)
    if args.reference_python is None and not args.quick:
        for candidate in (ROOT / "refenv" / "bin" / "python", Path("/work/refenv/bin/python")):
            if candidate.exists():
                args.reference_python = str(candidate)
                break
        else:
            sys.exit(
                "No reference env: build it with ../shared/tools/reference-env.sh refenv, or pass --reference-python."
            )
    if args.quick:
        args.sentences = min(args.sentences, 64)
    from sonar_llm_hf import SONAR_LANGUAGES
    from sonar_llm_hf.demo.story_world import generate_corpus
    from sonar_llm_hf.testing.tiny import train_tiny_spm

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        corpus = [s for story in generate_corpus(400, seed=0) for s in story]
        spm = train_tiny_spm(work / "spm.model", corpus, vocab_size=300 if args.quick else 2000)
        spec = dict(work=str(work), spm=str(spm), sonar=SIZES["quick" if args.quick else "full"], seed=0,
                    threads=args.threads, max_tokens=args.max_tokens, batch_size=args.batch_size, warmup=16,
                    texts=mixed_sentences(args.sentences), languages=list(SONAR_LANGUAGES))  # fmt: skip
        (work / "spec.json").write_text(json.dumps(spec))
        folder = work / "sonar" / "encoder"
        rows = {}
        if args.reference_python:
            worker = str(ROOT / "benchmarks" / "fairseq2_embed_worker.py")
            run([args.reference_python, worker, str(work / "spec.json")], "fairseq2_embed_worker.py", env)
            rows["fairseq2"] = json.loads((work / "fairseq2_embed.json").read_text())
            run([sys.executable, "conversion/convert_sonar_to_hf.py", "--encoder", str(work / "sonar_text_encoder.pt"),
                 "--tokenizer", str(spm), "--output", str(work / "sonar"), "--num-heads", str(spec["sonar"]["heads"])],
                "convert_sonar_to_hf.py", env)  # fmt: skip
            (work / "sonar_text_encoder.pt").unlink()
        else:
            build_quick_encoder(spec, folder)
        for variant in ("bucketed", "unbucketed"):
            run([sys.executable, __file__, "--_ours", variant, str(folder), str(work / "spec.json")], variant, env)
            rows[f"ours_{variant}"] = json.loads((work / f"ours_{variant}.json").read_text())
        import torch

        embeddings = {name: torch.load(work / f"{name}.pt", weights_only=True)
                      for name in ("ours_bucketed", "ours_unbucketed")}  # fmt: skip
        if "fairseq2" in rows:
            embeddings["fairseq2"] = torch.load(work / "fairseq2_embeddings.pt", weights_only=True)
        base = embeddings.get("fairseq2", embeddings["ours_bucketed"])
        for name, row in rows.items():
            row["sentences_per_s"] = len(spec["texts"]) / row["seconds"]
            row["max_abs_diff_vs_fairseq2" if "fairseq2" in embeddings else "max_abs_diff_vs_bucketed"] = float(
                (embeddings[name] - base).abs().max()
            )
    result = {"sentences": len(spec["texts"]), "max_tokens": args.max_tokens, "threads": args.threads,
              "quick": args.quick, "load_avg": os.getloadavg(), "rows": rows}  # fmt: skip
    if "fairseq2" in rows:
        result["speedup_vs_fairseq2"] = rows["ours_bucketed"]["sentences_per_s"] / rows["fairseq2"]["sentences_per_s"]
    print("| row | sentences/s | seconds | peak RSS | max abs diff |\n|---|---|---|---|---|")
    for name, row in rows.items():
        diff = row.get("max_abs_diff_vs_fairseq2", row.get("max_abs_diff_vs_bucketed"))
        print(f"| {name} | {row['sentences_per_s']:.1f} | {row['seconds']:.1f} | {row['peak_rss'] / 2**30:.2f} GiB "
              f"| {diff:.2e} |")  # fmt: skip
    if "speedup_vs_fairseq2" in result:
        print(f"ours / fairseq2: {result['speedup_vs_fairseq2']:.2f}x")
    if not args.quick or args.json:
        path = Path(args.json or ROOT / "benchmarks" / "results" / "embed.json")
        path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
