"""Reading the documents to embed, and which of them this process owns.

Inputs are jsonl/json, parquet or txt files (one document per line), folders saved with `Dataset.save_to_disk`, or
a `datasets` name already in the local cache (nothing is downloaded: set `HF_DATASETS_OFFLINE=1` to be sure). Several
inputs are read in the order given and concatenated; each must have the text (and language) column.

Work is divided by output shard, not by document: shard k holds documents `[k * shard_rows, (k + 1) * shard_rows)`
and belongs to process `k % world_size`. A shard's content therefore never depends on how many processes ran, and
two processes never write the same shard. The rank comes from `RANK`/`WORLD_SIZE` (set by torchrun and `accelerate
launch`) or, for a SLURM array, `SLURM_ARRAY_TASK_ID`/`SLURM_ARRAY_TASK_COUNT`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data_files import load_data_file


def load_documents(inputs: list[str], split: str = "train"):
    """One `datasets.Dataset` of every input, in order."""
    import datasets

    parts = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(path))
        elif path.is_file():
            loaded = load_data_file(path, split="train")
        elif path.exists():
            raise ValueError(f"{path} is a folder but not one saved with `save_to_disk` (no dataset_info.json).")
        else:
            try:
                loaded = datasets.load_dataset(item)
            except Exception as error:  # FileNotFoundError, ConnectionError, DatasetNotFoundError, ...
                raise ValueError(f"Input {item!r} is neither a file, a saved dataset folder, nor a dataset in the "
                                 f"local `datasets` cache ({type(error).__name__}: {error}).") from None  # fmt: skip
        if isinstance(loaded, (datasets.DatasetDict, dict)):
            if split not in loaded:
                raise ValueError(f"Input {item!r} has splits {list(loaded)}, not {split!r}.")
            loaded = loaded[split]
        parts.append(loaded)
    if not parts:
        raise ValueError("No input given.")
    columns = parts[0].column_names
    for item, part in zip(inputs, parts):
        if part.column_names != columns:
            raise ValueError(f"Input {item!r} has columns {part.column_names}, the first input {columns}; "
                             "inputs must share their columns.")  # fmt: skip
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def process_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun/accelerate (`RANK`, `WORLD_SIZE`) or a SLURM array; (0, 1) alone."""
    env = os.environ
    if "WORLD_SIZE" in env:
        rank, world = int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
    elif "SLURM_ARRAY_TASK_COUNT" in env:
        rank = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        world = int(env["SLURM_ARRAY_TASK_COUNT"])
    else:
        rank, world = 0, 1
    if not 0 <= rank < world:
        raise ValueError(f"Process rank {rank} is outside 0..{world - 1} (RANK/WORLD_SIZE or the SLURM array).")
    return rank, world


def owned_shards(num_documents: int, shard_rows: int, rank: int, world_size: int) -> list[tuple[int, int, int]]:
    """(shard index, first row, end row) of the shards this process writes."""
    if shard_rows < 1:
        raise ValueError(f"`shard_rows` must be at least 1, got {shard_rows}.")
    count = -(-num_documents // shard_rows)
    return [(k, k * shard_rows, min(num_documents, (k + 1) * shard_rows)) for k in range(rank, count, world_size)]


__all__ = ["load_documents", "owned_shards", "process_rank"]
