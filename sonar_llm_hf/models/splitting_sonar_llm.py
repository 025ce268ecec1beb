"""Offline sentence splitting for SONAR-LLM prompts and training documents.

The reference uses NLTK's punkt, which needs a download. We use pysbd (rule-based, its rules ship in the wheel,
22 languages) and fall back to a punctuation rule for languages it lacks or where it is not installed (remote code
must not require it).
"""

from __future__ import annotations

import importlib
import re
from functools import lru_cache

# SONAR language code prefix -> pysbd language code.
_PYSBD_LANGUAGES = {
    "eng": "en", "hin": "hi", "mar": "mr", "zho": "zh", "spa": "es", "amh": "am", "arb": "ar", "hye": "hy",
    "bul": "bg", "urd": "ur", "rus": "ru", "pol": "pl", "pes": "fa", "nld": "nl", "dan": "da", "fra": "fr",
    "mya": "my", "ell": "el", "ita": "it", "jpn": "ja", "deu": "de", "kaz": "kk", "slk": "sk",
}  # fmt: skip

# End of sentence: . ! ? or CJK/Devanagari/Arabic stops, optional closing quotes/brackets, then space.
_FALLBACK_BOUNDARY = re.compile(r"(?<=[.!?。！？।؟])[\"'”’)\]]*\s+")


@lru_cache(maxsize=32)
def _segmenter(lang: str):
    try:
        pysbd = importlib.import_module("pysbd")
    except ImportError:
        return None
    code = _PYSBD_LANGUAGES.get(lang.split("_")[0])
    return pysbd.Segmenter(language=code, clean=False) if code else None


def split_sentences(text: str, lang: str = "eng_Latn") -> list[str]:
    """Split a document into stripped, non-empty sentences."""
    if not isinstance(text, str):
        raise TypeError(f"Expected a string to split into sentences, got {type(text).__name__}.")
    segmenter = _segmenter(lang)
    pieces = segmenter.segment(text) if segmenter is not None else _FALLBACK_BOUNDARY.split(text)
    return [piece.strip() for piece in pieces if piece and piece.strip()]


__all__ = ["split_sentences"]
