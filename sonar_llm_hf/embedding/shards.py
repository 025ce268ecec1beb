"""Parquet shards in the Large Concept Model's corpus layout, written atomically.

One row per document: the input's columns unchanged, plus
- `text_sentences`: `list<string>`, the document's sentences;
- `text_sentences_sonar_emb`: `list<fixed_size_list<float, D>>`, one SONAR embedding per sentence (D = 1024 for
  SONAR), `float` (float32) or `halffloat` (float16), the names and types LCM's data loader reads
  (`source_column` / `source_text_column`); snappy, 200 rows per row group, as LCM's `prepare_wikipedia.py`.

A shard is written to a hidden temporary file in the same folder and renamed into place, so a shard file that exists
is complete; a killed run leaves at most a `.tmp-*` file, which the next run removes and redoes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

SENTENCES = "text_sentences"
EMBEDDINGS = "text_sentences_sonar_emb"
ROW_GROUP_SIZE = 200
_ARROW_TYPES = {"float32": "float32", "float16": "float16"}


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("Writing embedding shards needs pyarrow: `pip install 'sonar-llm-hf[embed]'` "
                          "(it comes with `datasets`).") from None  # fmt: skip
    return pa, pq


def encoder_fingerprint(encoder) -> str:
    """The encoder's weights in a few statistics per tensor: the same for the same weights however they were loaded
    (the config's bookkeeping, e.g. `_name_or_path`, is left out), different for another encoder."""
    import hashlib

    import torch

    digest = hashlib.sha256(f"{encoder.config.d_model}".encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        flat = tensor.detach().double().flatten()
        stats = torch.stack([flat.sum(), flat.abs().sum(), flat[: min(16, flat.numel())].sum()]).tolist()
        digest.update(f"{name}{tuple(tensor.shape)}{[round(v, 6) for v in stats]}".encode())
    return digest.hexdigest()[:16]


def shard_path(output: Path, index: int) -> Path:
    return Path(output) / f"shard_{index:05d}.parquet"


def embedding_column(embeddings: np.ndarray, counts: list[int]):
    """(N, D) numpy rows -> `list<fixed_size_list<float, D>>`, `counts[i]` rows for document i."""
    pa, _ = _pyarrow()
    dim = embeddings.shape[1]
    flat = pa.array(embeddings.reshape(-1), type=getattr(pa, _ARROW_TYPES[embeddings.dtype.name])())
    rows = pa.FixedSizeListArray.from_arrays(flat, dim)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, rows)


def write_shard(path: Path, table, metadata: dict) -> None:
    """Write `table` (a `pyarrow.Table`) with our metadata to `path` atomically."""
    _, pq = _pyarrow()
    # Only our key: `datasets`' own "huggingface" features would describe the input's columns, not the new ones.
    table = table.replace_schema_metadata({b"sonar_llm_hf": json.dumps(metadata, sort_keys=True).encode()})
    temporary = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        pq.write_table(table, temporary, compression="snappy", row_group_size=ROW_GROUP_SIZE)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def shard_metadata(path: Path) -> dict:
    """Our metadata of a finished shard (its rows and settings), read from the parquet footer only."""
    _, pq = _pyarrow()
    meta = pq.read_schema(path).metadata or {}
    if b"sonar_llm_hf" not in meta:
        raise ValueError(f"{path} was not written by `sonar-llm embed` (no sonar_llm_hf metadata); move it away.")
    return json.loads(meta[b"sonar_llm_hf"])


def remove_stale_temporaries(output: Path, owned: set[str]) -> int:
    """Delete temporary files left by a killed run of this process's shards; return how many."""
    removed = 0
    for temporary in Path(output).glob(".tmp-shard_*.parquet-*"):
        if temporary.name[len(".tmp-") :].rsplit("-", 1)[0] in owned:
            temporary.unlink(missing_ok=True)
            removed += 1
    return removed


__all__ = [
    "EMBEDDINGS",
    "SENTENCES",
    "embedding_column",
    "encoder_fingerprint",
    "shard_metadata",
    "shard_path",
    "write_shard",
]
