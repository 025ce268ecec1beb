"""Cutting sentences that are longer than the SONAR encoder can read, the way LCM's `resplit` does.

LCM (`lcm/datasets/sentence_splitter_pipeline.py`) re-splits a sentence that is too long at the separators
`... \\n ! ? ; : . , <tab> <space>`, trying them in that order, and greedily packs the pieces back together up to the
limit. LCM counts characters (256); we count the encoder's tokens, because that is what the encoder cannot exceed
(514 positions for SONAR, `[lang]` and `</s>` included). A piece still too long after the last separator (one
"word" of hundreds of tokens) is cut at the longest prefix that fits, so no text is ever dropped.
"""

from __future__ import annotations

from collections.abc import Callable

SEPARATORS = ("...", "\n", "!", "?", ";", ":", ".", ",", "\t", " ")


def _pack(text: str, separator: str, fits: Callable[[str], bool]) -> list[str]:
    """Split after each `separator` (kept on the left piece), then greedily join pieces while they fit."""
    pieces = [part + separator for part in text.split(separator)]
    pieces[-1] = pieces[-1][: len(pieces[-1]) - len(separator)]
    packed, current = [], ""
    for piece in pieces:
        if current and not fits(current + piece):
            packed.append(current)
            current = piece
        else:
            current += piece
    if current:
        packed.append(current)
    return packed


def _cut_prefix(text: str, fits: Callable[[str], bool]) -> list[str]:
    """Longest fitting prefixes (binary search on characters): the last resort for a piece without separators."""
    parts = []
    while text and not fits(text):
        low, high = 1, len(text)  # fits(text[:low]) is assumed true for one character
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(text[:middle]) else (low, middle - 1)
        parts.append(text[:low])
        text = text[low:]
    return [*parts, text] if text else parts


def resplit(sentence: str, fits: Callable[[str], bool], separators=SEPARATORS) -> list[str]:
    """`sentence` as pieces that each `fits`, cut at the first separator that works; `[sentence]` when it fits.

    Pieces are stripped and empty ones dropped (as the splitter's own sentences are), so the joined pieces equal the
    sentence up to whitespace at the cuts.
    """
    pieces = [sentence]
    for separator in separators:
        if all(fits(piece) for piece in pieces):
            break
        pieces = [part for piece in pieces
                  for part in ([piece] if fits(piece) else _pack(piece, separator, fits))]  # fmt: skip
    pieces = [part for piece in pieces for part in ([piece] if fits(piece) else _cut_prefix(piece, fits))]
    return [piece.strip() for piece in pieces if piece.strip()]


__all__ = ["SEPARATORS", "resplit"]
