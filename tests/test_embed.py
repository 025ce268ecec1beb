"""`sonar-llm embed`: a small corpus goes through split -> cut -> bucketed SONAR encoding -> LCM-layout parquet shards
-> pretraining examples; an interrupted run resumes to the same bytes, and 2 processes write the same shards as 1."""

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sonar_llm_hf.cli import main as cli_main
from sonar_llm_hf.embedding import encode_bucketed, resplit, runner, token_buckets
from sonar_llm_hf.models.generation_sonar_llm import split_sentences
from sonar_llm_hf.models.tokenization_sonar import encode_source

ROOT = Path(__file__).parents[1]
LONG = "It rained, " + ", ".join(f"then the {w} cat ran home" for w in ["red", "big", "old", "shy"] * 40) + "."
DOCUMENTS = [
    {"id": 0, "text": "Tom had a red ball. He went to the park! Was it sunny? Yes."},
    {"id": 1, "text": ""},
    {"id": 2, "text": "Anna likes cats. " + LONG + " Then she slept."},
    {"id": 3, "text": "The dog barked."},
    {"id": 4, "text": "One. Two. Three. Four. Five."},
]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCUMENTS))
    return path


def embed_args(corpus, output, model, **overrides):
    args = dict(inputs=[str(corpus)], output=str(output), text_column="text", lang=None, lang_column=None,
                model=str(model), dtype="float32", max_tokens=64, shard_rows=2, split="train", device="cpu",
                progress=False)  # fmt: skip
    return Namespace(**{**args, **overrides})


def shard_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("shard_*.parquet"))}


def test_resplit_cuts_at_the_first_separator_that_works():
    def fits(piece):
        return len(piece) <= 20

    text = "aaaa bbbb, cccc dddd, eeee ffff gggg hhhh"
    pieces = resplit(text, fits)
    assert all(fits(p) for p in pieces)
    assert pieces[:2] == ["aaaa bbbb,", "cccc dddd,"]  # commas before spaces
    assert " ".join(pieces).replace(" ", "") == text.replace(" ", "")  # nothing lost
    assert resplit("x" * 45, fits) == ["x" * 20, "x" * 20, "x" * 5]  # no separator left: longest prefixes
    assert resplit("short", fits) == ["short"]


def test_token_buckets_cap_padded_tokens_and_keep_every_index():
    lengths = [5, 40, 3, 12, 12, 7, 100, 1]
    batches = token_buckets(lengths, max_tokens=48)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 48
    assert [6] in batches  # a row longer than the cap goes alone
    with pytest.raises(ValueError, match="max_tokens"):
        token_buckets(lengths, 0)


def test_bucketed_encoding_restores_the_input_order(tiny_sonar_encoder):
    texts = ["A cat.", "The dog ran far away from home today.", "Hi.", "Tom and Anna played with a red ball."]
    ids = encode_source(tiny_sonar_encoder.tokenizer, texts, "eng_Latn")
    bucketed = encode_bucketed(tiny_sonar_encoder, ids, max_tokens=12)
    one_by_one = torch.cat([tiny_sonar_encoder.encode_token_ids([i], batch_size=1) for i in ids])
    # fp32 sums of another batch shape: a few ulps of values of order 1
    torch.testing.assert_close(bucketed, one_by_one, rtol=0, atol=1e-5)


def test_embed_round_trip_resume_and_two_processes(corpus, tmp_path, tiny_sonar_llm_dir, _tiny_sonar_llm, capsys):
    from sonar_llm_hf.training.data import SonarLLMDataCollator
    from sonar_llm_hf.training.embedded_corpus import load_embedded_corpus, prepare_embedded_dataset

    # 1. one process, through the CLI
    out = tmp_path / "one"
    argv = ["embed", str(corpus), "--output", str(out), "--model", str(tiny_sonar_llm_dir), "--shard-rows", "2",
            "--max-tokens", "64", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    assert torch.is_grad_enabled()  # the command leaves the process's autograd mode alone (pretraining follows)
    summary = capsys.readouterr().err
    assert "5 documents (1 empty)" in summary and "1 cut at separators" in summary and "peak RSS" in summary
    reference = shard_bytes(out)
    assert list(reference) == ["shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet"]

    # LCM's names and types, input columns kept, rows in input order
    table = pq.read_table(out)
    dim = _tiny_sonar_llm.sonar_encoder.config.d_model
    assert table.schema.field("text_sentences").type == pa.list_(pa.string())
    assert table.schema.field("text_sentences_sonar_emb").type == pa.list_(pa.list_(pa.float32(), dim))
    rows = table.to_pylist()
    assert [r["id"] for r in rows] == [0, 1, 2, 3, 4] and [r["text"] for r in rows] == [d["text"] for d in DOCUMENTS]
    assert rows[0]["text_sentences"] == split_sentences(DOCUMENTS[0]["text"]) and rows[1]["text_sentences"] == []
    encoder, tokenizer = _tiny_sonar_llm.sonar_encoder, _tiny_sonar_llm.tokenizer
    long_pieces = rows[2]["text_sentences"][1:-1]
    assert len(long_pieces) >= 2 and "".join(long_pieces).replace(" ", "") == LONG.replace(" ", "")
    assert max(len(i) for i in encode_source(tokenizer, long_pieces, max_length=10**9)) <= 514
    for row in rows:
        if row["text_sentences"]:
            expected = encoder.encode(row["text_sentences"], tokenizer=tokenizer)
            torch.testing.assert_close(torch.tensor(row["text_sentences_sonar_emb"]), expected, rtol=0, atol=1e-5)

    # 2. killed while writing its second shard (a temporary file left behind), then resumed
    resumed = tmp_path / "resumed"
    write = runner.write_shard
    calls = []

    def dying_write(path, table, metadata):
        calls.append(path.name)
        if len(calls) == 2:
            (path.parent / f".tmp-{path.name}-99999").write_bytes(b"half a shard")
            raise KeyboardInterrupt  # as SIGKILL: no clean-up, no later shard
        write(path, table, metadata)

    args = embed_args(corpus, resumed, tiny_sonar_llm_dir)
    runner.write_shard = dying_write
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.embed_corpus(args)
    finally:
        runner.write_shard = write
    assert list(shard_bytes(resumed)) == ["shard_00000.parquet"]
    stats = runner.embed_corpus(args)
    assert (stats.shards_skipped, stats.shards_written) == (1, 2)
    assert shard_bytes(resumed) == reference and not list(resumed.glob(".tmp-*"))
    assert runner.embed_corpus(args).shards_written == 0  # nothing left to do, nothing duplicated

    # 3. two processes (ranks from the environment, as torchrun/accelerate set them), running at once
    two = tmp_path / "two"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sonar_llm_hf.cli", *argv[:3], str(two), *argv[4:]]
    procs = [subprocess.Popen(command, env={**env, "RANK": str(r)}, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert "rank 0/2: 3 documents" in errors[0] and "rank 1/2: 2 documents" in errors[1]  # shards 0, 2 and 1
    assert shard_bytes(two) == reference

    # 4. pretraining examples read from the shards (no re-embedding), batched by the collator, a finite loss
    with pytest.raises(ValueError, match="another SONAR encoder"):
        other = type(encoder)(encoder.config).eval()
        prepare_embedded_dataset(load_embedded_corpus(out), other, tokenizer=tokenizer, corpus_path=out)
    for streaming in (False, True):
        examples = prepare_embedded_dataset(load_embedded_corpus(out, streaming=streaming), _tiny_sonar_llm,
                                            corpus_path=out)  # fmt: skip
        examples = list(examples)
        assert len(examples) == 4  # the empty document has only the end sentence: nothing to predict
        first = examples[0]
        assert first["sentences"] == [*split_sentences(DOCUMENTS[0]["text"]), _tiny_sonar_llm.config.eos_sentence]
        np.testing.assert_array_equal(np.asarray(first["sentence_embeddings"][:-1], dtype=np.float32),
                                      np.asarray(rows[0]["text_sentences_sonar_emb"], dtype=np.float32))  # fmt: skip
    batch = SonarLLMDataCollator.for_model(_tiny_sonar_llm)(examples[:2])
    assert torch.isfinite(_tiny_sonar_llm(**batch).loss)


def test_float16_shards_and_bad_input(corpus, tmp_path, tiny_sonar_llm_dir):
    out = tmp_path / "half"
    runner.embed_corpus(embed_args(corpus, out, tiny_sonar_llm_dir, dtype="float16", shard_rows=10))
    dim = json.loads((out / "_embed_config.json").read_text())["dim"]
    assert pq.read_schema(out / "shard_00000.parquet").field("text_sentences_sonar_emb").type == pa.list_(
        pa.list_(pa.float16(), dim)
    )
    brain = tmp_path / "bf16"  # no bfloat16 in arrow: bf16 results stored exactly as float32
    runner.embed_corpus(embed_args(corpus, brain, tiny_sonar_llm_dir, dtype="bfloat16", shard_rows=10))
    column = pq.read_table(brain).column("text_sentences_sonar_emb")
    assert column.type == pa.list_(pa.list_(pa.float32(), dim))
    values = torch.tensor(column.to_pylist()[0])
    assert torch.equal(values, values.bfloat16().float())
    with pytest.raises(ValueError, match="other settings.*dtype"):  # resuming with other settings is refused
        runner.embed_corpus(embed_args(corpus, out, tiny_sonar_llm_dir, shard_rows=10))
    with pytest.raises(ValueError, match="no column 'body'"):
        runner.embed_corpus(embed_args(corpus, tmp_path / "x", tiny_sonar_llm_dir, text_column="body"))
    with pytest.raises(ValueError, match="either --lang"):
        runner.embed_corpus(embed_args(corpus, tmp_path / "y", tiny_sonar_llm_dir, lang="eng_Latn", lang_column="id"))


def test_ranks_come_from_torchrun_or_a_slurm_array(monkeypatch):
    from sonar_llm_hf.embedding.inputs import owned_shards, process_rank

    for name in ("RANK", "WORLD_SIZE", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(name, raising=False)
    assert process_rank() == (0, 1)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "5")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    assert process_rank() == (2, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun/accelerate win over the array
    assert process_rank() == (1, 2)
    assert owned_shards(10, 3, 1, 2) == [(1, 3, 6), (3, 9, 10)]
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="outside 0..1"):
        process_rank()
