"""Offline sentence splitting for SONAR-LLM: one splitter for prompts, training documents and evaluation.

The reference uses NLTK's punkt, which needs a download. We use sentencex (Wikimedia's rule-based splitter: its
rules are compiled into its wheel, and its language fallbacks cover ~300 languages). It is imported plainly, so
that remote code run without it fails with transformers' "requires the following packages ... Run `pip install
sentencex`" instead of silently splitting differently from training.
"""

from __future__ import annotations

import sentencex

# SONAR language (ISO 639-3 prefix) -> the sentencex language whose rules apply: its own, or the one that
# sentencex's fallback table gives (Catalan for Occitan, Slovak for Czech, Portuguese for Galician, ...). Every other
# language gets sentencex's default rules (English abbreviations; `.`, `!`, `?` and the stops of other scripts:
# 。！？ । ؟ ። ...). The table is explicit rather than ISO 639-1 codes passed through, because codes collide: SONAR's
# `als` is Tosk Albanian, sentencex's `als` is Alemannic (German rules).
SENTENCEX_LANGUAGES = {
    "eng": "en", "amh": "am", "bul": "bg", "ben": "bn", "cat": "ca", "oci": "ca", "dan": "da", "deu": "de",
    "ltz": "de", "ell": "el", "spa": "es", "ast": "es", "quy": "es", "fin": "fi", "fra": "fr", "fon": "fr",
    "hat": "fr", "kab": "fr", "kbp": "fr", "lin": "fr", "lua": "fr", "plt": "fr", "sag": "fr", "wol": "fr",
    "guj": "gu", "hin": "hi", "awa": "hi", "mag": "hi", "mai": "hi", "san": "hi", "hye": "hy", "ita": "it",
    "fur": "it", "lij": "it", "lmo": "it", "scn": "it", "vec": "it", "jpn": "ja", "kaz": "kk", "kan": "kn",
    "mal": "ml", "mar": "mr", "mya": "my", "nld": "nl", "lim": "nl", "pan": "pa", "pol": "pl", "szl": "pl",
    "por": "pt", "glg": "pt", "kea": "pt", "rus": "ru", "tat": "ru", "slk": "sk", "ces": "sk", "tam": "ta",
    "tel": "te", "ukr": "uk", "arb": "ar", "ars": "ar", "acm": "ar", "acq": "ar", "aeb": "ar", "ajp": "ar",
    "apc": "ar", "ary": "ar", "arz": "ar",
}  # fmt: skip
DEFAULT_SPLITTER_LANGUAGE = "en"


def splitter_language(lang: str) -> str:
    """The sentencex language code used for a SONAR language code (`"deu_Latn"` -> `"de"`)."""
    return SENTENCEX_LANGUAGES.get(lang.split("_")[0], DEFAULT_SPLITTER_LANGUAGE)


def split_sentences(text: str, lang: str = "eng_Latn") -> list[str]:
    """Split a document into stripped, non-empty sentences (sentencex, with the rules of `lang`)."""
    if not isinstance(text, str):
        raise TypeError(f"Expected a string to split into sentences, got {type(text).__name__}.")
    if not isinstance(lang, str):
        raise TypeError(f"`lang` must be a SONAR language code such as 'eng_Latn', got {type(lang).__name__}.")
    pieces = sentencex.segment(splitter_language(lang), text)
    return [piece.strip() for piece in pieces if piece.strip()]


__all__ = ["SENTENCEX_LANGUAGES", "split_sentences", "splitter_language"]
