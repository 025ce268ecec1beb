"""Reading one local data file with `datasets`, the same way for every command (`evaluate`, `embed`, the examples).

The builder comes from the suffix; a text file that is not UTF-8 is named with the byte offset and line where it
stops being UTF-8 (`datasets`' own error names neither the file nor the place)."""

from __future__ import annotations

import codecs
from pathlib import Path

FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}


def check_utf8(path: str | Path, chunk_size: int = 1 << 20) -> None:
    """Raise `ValueError` naming the file, byte offset and line of the first invalid UTF-8 sequence in `path`."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0  # bytes and newlines before the current chunk
    with open(path, "rb") as file:
        while True:
            chunk = file.read(chunk_size)
            pending = len(decoder.getstate()[0])  # the start of a character cut by the previous chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                at = offset - pending + error.start
                line = lines + chunk[: max(0, error.start - pending)].count(b"\n") + 1
                bad = error.object[error.start : error.end]
                raise ValueError(f"{path} is not valid UTF-8: byte offset {at} (line {line}) holds {bad!r} "
                                 f"({error.reason}); save the file as UTF-8.") from None  # fmt: skip
            if not chunk:
                return
            offset += len(chunk)
            lines += chunk.count(b"\n")


def load_data_file(path: str | Path, split: str | None = None, text_sample_by: str = "line"):
    """`datasets.load_dataset` of one local file (a `DatasetDict`, or the `split` given); `.txt` files give one row
    per line, or per paragraph with `text_sample_by="paragraph"`."""
    import datasets

    path = Path(path)
    builder = FILE_BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"Unsupported data file {path}: use {', '.join(FILE_BUILDERS)} or a save_to_disk folder.")
    if builder != "parquet":
        check_utf8(path)
    options = {"sample_by": text_sample_by} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files=str(path), split=split, **options)


__all__ = ["FILE_BUILDERS", "check_utf8", "load_data_file"]
