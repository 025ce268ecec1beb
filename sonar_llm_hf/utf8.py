"""Where a text file stops being UTF-8: `datasets`' own error names neither the file nor the place."""

from __future__ import annotations

import codecs
from pathlib import Path


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


__all__ = ["check_utf8"]
