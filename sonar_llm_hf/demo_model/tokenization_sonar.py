"""SONAR tokenization: NLLB-200's SentencePiece vocabulary in the HF NLLB id layout, configured the SONAR way.

- Source (encoder) ids: `[lang] pieces </s>`; decoder prompt `[</s>, lang]`; decoder targets `[lang] pieces </s>`.
- Ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, SentencePiece piece k (k >= 3) -> k + 1, then the 202 language codes,
  then `<mask>`. fairseq2's layout differs only in ids 0-3 (the converter permutes those embedding rows).

transformers 5 cannot build this from a `.model` file by itself (`NllbTokenizer(vocab_file=...)` ignores the file,
and loading a SentencePiece folder drops the fairseq offset and the language codes), so `build_sonar_tokenizer`
writes the vocabulary explicitly and returns a plain `NllbTokenizer`; saved folders reload with `AutoTokenizer`
and need no remote code. Ids equal SentencePiece's (+1), as fairseq2's; leading, trailing and repeated spaces are
normalised as SentencePiece does (by `encode_source`/`encode_target`, which strip texts: a reloaded NllbTokenizer
called directly keeps a leading/trailing space as a "▁" piece).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence

from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

# SONAR's 202 languages, in the order of their token ids (identical to NLLB's list).
SONAR_LANGUAGES: tuple[str, ...] = tuple(FAIRSEQ_LANGUAGE_CODES)

_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}


def build_sonar_tokenizer(spm_path: str, model_max_length: int = 514):
    """An `NllbTokenizer` for a SONAR/NLLB SentencePiece BPE model (unk=0, bos=1, eos=2, no pad)."""
    from tokenizers import normalizers
    from tokenizers.models import BPE
    from transformers import NllbTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extracted = SentencePieceExtractor(str(spm_path)).extract(BPE)
    vocab = dict(_SPECIALS)
    for piece, index in extracted["vocab"].items():
        if index >= 3:  # SentencePiece's <unk>, <s>, </s> are already placed
            vocab[piece] = index + 1
    for lang in SONAR_LANGUAGES:
        vocab[lang] = len(vocab)
    vocab["<mask>"] = len(vocab)
    tokenizer = NllbTokenizer(
        vocab=vocab,
        merges=extracted["merges"],
        _spm_precompiled_charsmap=extracted["_spm_precompiled_charsmap"],
        src_lang="eng_Latn",
        tgt_lang="eng_Latn",
        legacy_behaviour=False,
        model_max_length=model_max_length,
    )
    # SentencePiece also drops leading and trailing whitespace. (A reloaded NllbTokenizer rebuilds its normalizer
    # without this step, so `encode_source`/`encode_target` strip texts themselves.)
    backend = tokenizer.backend_tokenizer
    steps = [backend.normalizer] if backend.normalizer is not None else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.Strip()])
    return tokenizer


def check_language(lang: str, languages: Sequence[str] = SONAR_LANGUAGES) -> str:
    """Return `lang` if SONAR knows it, else raise a `ValueError` naming the closest codes."""
    if isinstance(lang, str) and lang in languages:
        return lang
    guesses = difflib.get_close_matches(str(lang), languages, n=3, cutoff=0.4)
    if not guesses and isinstance(lang, str):
        folded = lang.lower()
        guesses = [code for code in languages if code.lower().startswith(folded[:3])][:3]
    hint = f" Did you mean: {', '.join(guesses)}?" if guesses else ""
    raise ValueError(
        f"Unknown language code {lang!r}.{hint} SONAR codes look like 'eng_Latn', 'fra_Latn', 'deu_Latn' "
        f"(ISO 639-3 + script; {len(languages)} in `SONAR_LANGUAGES`)."
    )


def validate_texts(texts) -> list[str]:
    """A string or a list of non-empty strings, else a clear error naming the bad item."""
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or not isinstance(texts, (list, tuple)):
        raise TypeError(f"Expected a string or a list of strings, got {type(texts).__name__}.")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Item {index} is {type(text).__name__}, not a string.")
        if not text.strip():
            raise ValueError(f"Item {index} is empty or whitespace only; SONAR needs text to embed.")
    return list(texts)


def _encode(tokenizer, texts, lang: str, max_length: int, kind: str) -> list[list[int]]:
    texts = [t.strip() for t in validate_texts(texts)]
    lang_id = tokenizer.convert_tokens_to_ids(check_language(lang))
    eos_id = tokenizer.convert_tokens_to_ids("</s>")
    pieces = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rows, truncated = [], 0
    for ids in pieces:
        if len(ids) + 2 > max_length:
            ids, truncated = ids[: max_length - 2], truncated + 1
        rows.append([lang_id, *ids, eos_id])
    if truncated:
        warnings.warn(
            f"{truncated} {kind} text(s) exceeded {max_length} tokens and were truncated; `</s>` was kept "
            "(fairseq2 silently drops it). Split long texts into sentences for faithful embeddings.",
            UserWarning,
            stacklevel=3,
        )
    return rows


def encode_source(tokenizer, texts, lang: str = "eng_Latn", max_length: int = 514) -> list[list[int]]:
    """Encoder input ids `[lang] pieces </s>`; over-long texts keep `[lang]` and `</s>` and warn."""
    return _encode(tokenizer, texts, lang, max_length, "source")


def encode_target(tokenizer, texts, lang: str = "eng_Latn", max_length: int = 512) -> list[list[int]]:
    """Decoder targets `[lang] pieces </s>` (the decoder input is these shifted right behind `</s>`)."""
    return _encode(tokenizer, texts, lang, max_length, "target")


def decode_ids(tokenizer, ids_batch: Sequence[Sequence[int]]) -> list[str]:
    """Text of generated ids without specials or language codes, and no clean-up (fairseq2 does none)."""
    return [
        tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()
        for ids in ids_batch
    ]


def suppressed_token_ids(tokenizer, model_vocab_size: int) -> list[int]:
    """Ids the SONAR decoder must never emit: padding, `<mask>` and model rows the tokenizer cannot decode.

    The real model has 256,206 rows but the HF vocabulary 256,204 (fairseq2's `<MMT_BT_DATA>`, `<SMT_BT_DATA>`).
    """
    ids = {tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<mask>")}
    ids.update(range(len(tokenizer), model_vocab_size))
    return sorted(i for i in ids if i is not None and i < model_vocab_size)


__all__ = [
    "SONAR_LANGUAGES",
    "build_sonar_tokenizer",
    "check_language",
    "validate_texts",
    "encode_source",
    "encode_target",
    "decode_ids",
    "suppressed_token_ids",
]
