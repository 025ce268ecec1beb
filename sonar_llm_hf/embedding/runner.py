"""`sonar-llm embed`: documents -> sentences -> SONAR embeddings -> parquet shards in LCM's layout.

    sonar-llm embed docs.jsonl --output corpus/ [--lang eng_Latn | --lang-column lang] [--model sonar/encoder]
    torchrun --nproc-per-node 2 -m sonar_llm_hf.cli embed docs.jsonl --output corpus/     # one shard set per process

Per shard of `--shard-rows` documents: split each document with the package's splitter (`split_sentences`), cut
sentences longer than the encoder's positions at separators (`resplit.py`, counted), embed them in length buckets
of at most `--max-tokens` padded tokens (`buckets.py`), and write the shard atomically (`shards.py`). A rerun skips
finished shards after checking they were made with the same settings (`_embed_config.json`), so an interrupted run
resumes where it stopped, and processes (`inputs.py`) write disjoint shards whose bytes do not depend on how many
processes ran.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..models.generation_sonar_llm import split_sentences
from ..models.tokenization_sonar import check_language, encode_source
from .buckets import encode_bucketed
from .inputs import load_documents, owned_shards, process_rank
from .resplit import resplit
from .shards import (
    EMBEDDINGS,
    SENTENCES,
    embedding_column,
    encoder_fingerprint,
    remove_stale_temporaries,
    shard_metadata,
    shard_path,
    write_shard,
)

FORMAT_VERSION = 1
CONFIG_FILE = "_embed_config.json"  # "_" and ".": pyarrow and LCM readers skip them
_TORCH_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class EmbedStats:
    """What one process did; `summary()` is the line printed at the end."""

    rank: int = 0
    world_size: int = 1
    shards_written: int = 0
    shards_skipped: int = 0
    documents: int = 0
    empty_documents: int = 0
    sentences: int = 0
    cut_sentences: int = 0
    pieces_from_cuts: int = 0
    seconds: float = 0.0
    peak_rss_gib: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.sentences / self.seconds if self.seconds else 0.0
        return (f"rank {self.rank}/{self.world_size}: {self.documents} documents ({self.empty_documents} empty), "
                f"{self.sentences} sentences, {self.cut_sentences} cut at separators into {self.pieces_from_cuts} "
                f"pieces; {self.shards_written} shards written, {self.shards_skipped} already done; "
                f"{self.seconds:.1f} s ({rate:.1f} sentences/s); peak RSS {self.peak_rss_gib:.2f} GiB")  # fmt: skip


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def load_sonar_encoder(model: str | None, dtype: str = "float32", device: str | None = None):
    """(encoder, tokenizer, where it came from): a SONAR encoder folder/repo, or the encoder of a SONAR-LLM one;
    without `model`, the packaged demo model's encoder (offline)."""
    import torch
    from transformers import AutoModel

    from ..demo import default_model_path

    path = model or default_model_path(verbose=True)
    loaded = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype))
    encoder = getattr(loaded, "sonar_encoder", loaded)
    tokenizer = getattr(loaded, "tokenizer", None) or getattr(encoder, "tokenizer", None)
    if not hasattr(encoder, "encode_token_ids") or tokenizer is None:
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a SONAR encoder with its tokenizer (pass the "
                         "converter's `encoder` folder or a SONAR-LLM folder).")  # fmt: skip
    del loaded  # a SONAR-LLM's decoder and backbone are not needed
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    from ..speed import prepare_for_inference

    # oneDNN products on fp32 CPU and padding-free batches: exact, weights untouched (the shards' fingerprint holds)
    return prepare_for_inference(encoder.to(device), kernels="onednn"), tokenizer, str(path)


class SentencePreparer:
    """Documents -> sentences that fit the encoder -> token ids, counting the sentences it had to cut."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.cut_sentences = self.pieces_from_cuts = 0

    def _lengths(self, texts: list[str], lang: str) -> list[int]:
        return [len(ids) for ids in encode_source(self.tokenizer, texts, lang, max_length=1 << 30)]

    def sentences(self, text: str, lang: str) -> list[str]:
        sentences = split_sentences(text, lang)
        if not sentences:
            return []
        out = []
        for sentence, length in zip(sentences, self._lengths(sentences, lang)):
            if length <= self.max_length:
                out.append(sentence)
                continue
            pieces = resplit(sentence, lambda s: not s.strip() or self._lengths([s], lang)[0] <= self.max_length)
            self.cut_sentences += 1
            self.pieces_from_cuts += len(pieces)
            out.extend(pieces)
        return out

    def token_ids(self, sentences: list[str], lang: str) -> list[list[int]]:
        return encode_source(self.tokenizer, sentences, lang, max_length=self.max_length, truncation=False)


def _document_langs(rows: dict, count: int, lang: str, lang_column: str | None, first_row: int) -> list[str]:
    if lang_column is None:
        return [lang] * count
    langs = []
    for offset, value in enumerate(rows[lang_column]):
        try:
            langs.append(check_language(value or lang))
        except ValueError as error:
            raise ValueError(f"Row {first_row + offset}, column {lang_column!r}: {error}") from None
    return langs


def embed_shard(table, first_row: int, encoder, preparer: SentencePreparer, options: dict, stats: EmbedStats, bar):
    """One shard's table (the input's rows) with `text_sentences` and `text_sentences_sonar_emb` appended."""
    import torch

    rows = table.to_pydict()
    count = table.num_rows
    texts = rows[options["text_column"]]
    langs = _document_langs(rows, count, options["lang"], options["lang_column"], first_row)
    documents, flat_ids = [], []
    for offset, (text, lang) in enumerate(zip(texts, langs)):
        if text is not None and not isinstance(text, str):
            raise TypeError(f"Row {first_row + offset}: column {options['text_column']!r} holds "
                            f"{type(text).__name__}, not text.")  # fmt: skip
        sentences = preparer.sentences(text, lang) if text else []
        stats.empty_documents += not sentences
        documents.append(sentences)
        if sentences:
            flat_ids.extend(preparer.token_ids(sentences, lang))
    counts = [len(sentences) for sentences in documents]
    if flat_ids:
        embeddings = encode_bucketed(encoder, flat_ids, options["max_tokens"], on_batch=bar.update)
        stored = torch.float32 if options["dtype"] == "bfloat16" else getattr(torch, options["dtype"])
        embeddings = embeddings.to(stored)
        array = embeddings.numpy()
    else:
        stored = np.float16 if options["dtype"] == "float16" else np.float32
        array = np.zeros((0, encoder.config.d_model), dtype=stored)
    stats.documents += count
    stats.sentences += len(flat_ids)
    table = table.append_column(SENTENCES, _string_lists(documents))
    return table.append_column(EMBEDDINGS, embedding_column(array, counts))


def _string_lists(documents: list[list[str]]):
    import pyarrow as pa

    return pa.array(documents, type=pa.list_(pa.string()))


def _settings(args, source: str, encoder, num_documents: int) -> dict:
    def where(item: str) -> str:  # a path, resolved (a rerun from another folder resumes); else a name
        return str(Path(item).resolve()) if Path(item).exists() else item

    return {
        "format_version": FORMAT_VERSION, "inputs": [where(i) for i in args.inputs], "documents": num_documents,
        "text_column": args.text_column, "lang": args.lang, "lang_column": args.lang_column, "model": where(source),
        "encoder_fingerprint": encoder_fingerprint(encoder), "dim": encoder.config.d_model, "dtype": args.dtype,
        "shard_rows": args.shard_rows, "max_length": encoder.config.max_position_embeddings,
    }  # fmt: skip


def _check_or_write_config(output: Path, settings: dict) -> None:
    """The settings every shard in `output` was made with: written by the first run, compared by every rerun."""
    path = output / CONFIG_FILE
    if path.exists():
        previous = json.loads(path.read_text())
        changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
        if changed:
            details = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise ValueError(f"{output} holds shards made with other settings ({details}). Use a new --output "
                             "folder, or rerun with the earlier settings to resume.")  # fmt: skip
        return
    temporary = path.with_name(f".tmp-{CONFIG_FILE}-{os.getpid()}")
    temporary.write_text(json.dumps(settings, indent=1, sort_keys=True))
    os.replace(temporary, path)  # processes starting together write the same content


def embed_corpus(args: argparse.Namespace, rank: int | None = None, world_size: int | None = None) -> EmbedStats:
    """Run `sonar-llm embed` for this process (rank and world size from the environment unless given)."""
    import torch
    from tqdm.auto import tqdm

    start = time.perf_counter()
    if args.dtype not in _TORCH_DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(_TORCH_DTYPES)}, got {args.dtype!r}.")
    if args.lang_column and args.lang:
        raise ValueError("Pass either --lang (one language for every document) or --lang-column, not both.")
    lang = check_language(args.lang or "eng_Latn")
    if rank is None or world_size is None:
        rank, world_size = process_rank()
    stats = EmbedStats(rank=rank, world_size=world_size)
    documents = load_documents(args.inputs, split=args.split)
    for column in (args.text_column, args.lang_column):
        if column and column not in documents.column_names:
            raise ValueError(f"The input has no column {column!r}; its columns are {documents.column_names} "
                             "(--text-column / --lang-column).")  # fmt: skip
    clashes = {SENTENCES, EMBEDDINGS} & set(documents.column_names)
    if clashes:
        raise ValueError(f"The input already has column(s) {sorted(clashes)}, which embed writes: is it already "
                         "embedded? Rename or drop them.")  # fmt: skip
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    compute = "float32" if (args.dtype == "float16" and device == "cpu") else args.dtype
    if compute != args.dtype:
        stats.notes.append("float16 on CPU: computed in float32, stored as float16")
    if args.dtype == "bfloat16":
        stats.notes.append("bfloat16: computed in bfloat16, stored exactly as float32 (arrow has no bfloat16)")
    encoder, tokenizer, source = load_sonar_encoder(args.model, compute, device)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    settings = _settings(args, source, encoder, len(documents))
    _check_or_write_config(output, settings)
    shards = owned_shards(len(documents), args.shard_rows, rank, world_size)
    remove_stale_temporaries(output, {shard_path(output, k).name for k, _, _ in shards})
    preparer = SentencePreparer(tokenizer, encoder.config.max_position_embeddings)
    options = dict(text_column=args.text_column, lang=lang, lang_column=args.lang_column, dtype=args.dtype,
                   max_tokens=args.max_tokens)  # fmt: skip
    arrow = documents.with_format("arrow")
    bar = tqdm(unit=" sentences", desc=f"embed [{rank}/{world_size}]", disable=not args.progress, dynamic_ncols=True)
    for index, first, end in shards:
        path = shard_path(output, index)
        metadata = {"shard": index, "rows": [first, end], "settings": settings}
        if path.exists():
            if shard_metadata(path) != metadata:
                raise ValueError(f"{path} does not hold rows {first}-{end} of these settings; move it away.")
            stats.shards_skipped += 1
            continue
        table = embed_shard(arrow[first:end], first, encoder, preparer, options, stats, bar)
        write_shard(path, table, metadata)
        stats.shards_written += 1
        bar.set_postfix(shards=f"{stats.shards_written + stats.shards_skipped}/{len(shards)}")
    bar.close()
    stats.cut_sentences, stats.pieces_from_cuts = preparer.cut_sentences, preparer.pieces_from_cuts
    stats.seconds = time.perf_counter() - start
    stats.peak_rss_gib = peak_rss_gib()
    return stats


def add_embed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="jsonl/json, parquet or txt files, save_to_disk folders or cached dataset names",
    )
    parser.add_argument("--output", required=True, help="folder of the parquet shards (created; reruns resume)")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--lang", default=None, help="SONAR language of every document (default eng_Latn)")
    parser.add_argument("--lang-column", default=None, help="column holding each document's SONAR language code")
    parser.add_argument(
        "--model",
        default=None,
        help="SONAR encoder folder/repo, or a SONAR-LLM one (default: the packaged demo model, offline)",
    )
    parser.add_argument(
        "--dtype",
        choices=_TORCH_DTYPES,
        default="float32",
        help="embeddings' dtype (float16 is stored as halffloat; bfloat16 is stored as float32)",
    )
    parser.add_argument("--max-tokens", type=int, default=8192, help="padded tokens per encoder batch")
    parser.add_argument("--shard-rows", type=int, default=10000, help="documents per output shard")
    parser.add_argument("--split", default="train", help="split of a dataset dict input")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run_embed(args: argparse.Namespace) -> int:
    stats = embed_corpus(args)
    for note in stats.notes:
        print(f"sonar-llm embed: note: {note}", file=sys.stderr)
    print(f"sonar-llm embed: {stats.summary()}", file=sys.stderr)
    summary = Path(args.output) / f"_summary_rank{stats.rank}of{stats.world_size}.json"
    summary.write_text(json.dumps(asdict(stats), indent=1))
    return 0


__all__ = ["EmbedStats", "add_embed_arguments", "embed_corpus", "load_sonar_encoder", "run_embed"]
