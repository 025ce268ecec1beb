"""The benchmark scripts run from a fresh install in their --quick modes, print their figures (no timing asserts)
and check that both sides of each comparison computed the same outputs, each side on its own code path."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def run(script: str, *options: str):
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *options], capture_output=True,
                            text=True, timeout=600, cwd=BENCHMARKS)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout, json.loads(result.stdout.strip().splitlines()[-1])


def test_bench_generate_quick():
    stdout, results = run("bench_generate.py")
    assert "| s / sentence |" in stdout
    for key in ("speedup", "reference_sentences_per_s", "ours_sentences_per_s", "ours_share_sonar_decode",
                "ours_share_sonar_encode", "floor_s_per_sentence", "gflop_per_sentence", "matmul_gflops"):  # fmt: skip
        assert results[key] > 0, key
    # the reference loop (one prompt, full recompute) and ours (batched, left-padded, cached) computed the same
    # documents. A random decoder's texts hardly depend on the embeddings, so the predictions are compared too: the
    # same fp32 products summed in another order, each off by about sqrt(K) * eps * |terms| (K <= 256 terms here:
    # 2e-6 for terms of size 1), a few products deep -> 1e-5 per unit of magnitude. (A position off by one in the
    # cached step moves them by 1e-4.)
    assert results["reference_prompts"] == 2 and results["same_texts"] == 2
    assert results["prediction_max_abs_diff"] < 1e-5 * max(1.0, results["prediction_max_abs"])


def test_bench_train_quick():
    stdout, rows = run("bench_train.py")
    assert "| side | batch |" in stdout
    by_side = {r["side"]: r for r in rows}
    assert set(by_side) == {"reference", "ours", "ours-checkpointed"}
    reference = by_side["reference"]
    for ours in (by_side["ours"], by_side["ours-checkpointed"]):
        assert abs(reference["loss"] - ours["loss"]) < 1e-5  # same math: only memory and speed may differ
        assert reference["target_tokens"] == ours["target_tokens"] and ours["peak_rss_gib"] > 0


def test_bench_fairseq2_quick():
    """Without the reference env (CI), --quick runs the comparison against the restatement on tiny models."""
    stdout, results = run("bench_fairseq2.py", "--packed", "--int8")
    assert "| s per sentence | restatement (not fairseq2) | ours | speed-up |" in stdout
    assert results["baseline"] == "restatement" and results["quick"]
    for key in ("decode_b1", "decode_bn", "encode_b1", "encode_bn", "generate_1", "generate_n"):
        assert results[key]["speedup"] > 0, key
    # same outputs on both sides: ids, embeddings (SONAR's pipeline restated: padded batches, torch's products),
    # generated texts (--quick: 4 inputs, 2 decoded one at a time, 2 reference prompts)
    assert results["decode_bn_same_ids"] == 4 and results["decode_b1_same_ids"] == 2
    assert results["encode_max_abs_diff"] < 1e-5
    assert results["generate_same_texts"] == 2 and results["generate_prediction_max_abs_diff"] < 1e-5  # as above
    packed = results["packed"]  # exact: the same outputs again
    assert (
        packed["decode_bn_same_ids"] == 4
        and packed["encode_max_abs_diff"] < 1e-5
        and packed["generate_same_texts"] == 2
    )
    assert packed["generate_prediction_max_abs_diff"] < 1e-5
    assert results["int8"]["encode_bn_min_cosine"] > 0.9 and results["int8"]["decode_bn"]["speedup"] > 0


def test_bench_exp_floor_quick():
    stdout, results = run("bench_exp_floor.py")
    assert "| logit spread (std) |" in stdout
    narrow, wide = results["std_3"], results["std_40"]
    assert narrow["share_below_floor"] == 0 and wide["share_below_floor"] > 0.5  # the two regimes it compares
    assert narrow["same_sums"] and wide["same_sums"]  # the floor changes no sum
    assert all(row[key] > 0 for row in (narrow, wide) for key in ("exp_ms", "floor_exp_ms", "log_softmax_ms"))


def test_bench_demo_generation_quick():
    """Before (every control off) and after (the demo's saved settings) on held-out and ordinary prompts."""
    stdout, results = run("bench_demo_generation.py")
    assert "| settings | loop rate |" in stdout and "| latent_temperature |" in stdout
    for name in ("before", "after"):
        heldout, ordinary = results[name]["heldout"], results[name]["ordinary"]
        assert 0 <= heldout["loop_rate"] <= 1 and 0 <= heldout["agreement"] <= 1 and heldout["mean_length"] >= 2
        assert 0 <= ordinary["ok"] <= 24
    assert [row["latent_temperature"] for row in results["diversity"]] == [0.0, 0.1]
    # Without latent noise a seed changes only the re-decodes of avoided sentences; with it, whole stories.
    assert 1 <= results["diversity"][0]["distinct_per_prompt"] < results["diversity"][1]["distinct_per_prompt"]


def test_bench_embed_quick():
    """Without the reference env, --quick times our bucketed and unbucketed encoder on a tiny model."""
    stdout, results = run("bench_embed.py")
    assert "| row | sentences/s |" in stdout
    rows = results["rows"]
    assert set(rows) == {"ours_bucketed", "ours_unbucketed"} and results["sentences"] == 64
    assert rows["ours_unbucketed"]["max_abs_diff_vs_bucketed"] < 1e-5  # same embeddings, other batches
    assert all(row["sentences_per_s"] > 0 and row["peak_rss"] > 0 for row in rows.values())


def test_bench_load_memory_quick():
    stdout, rows = run("bench_load_memory.py")
    assert "| part | safetensors |" in stdout
    assert [r["part"] for r in rows] == ["encoder", "decoder"]
    assert all(r["file_bytes"] >= r["param_bytes"] > 0 and r["peak_added"] > 0 for r in rows)
