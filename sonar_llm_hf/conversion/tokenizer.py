"""Building the SONAR tokenizer from an NLLB-style SentencePiece model file, once, at conversion time.

The result is a plain transformers `NllbTokenizer` in the HF NLLB id layout (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3,
SentencePiece piece k -> k + 1, the 202 language codes, then `<mask>`), saved as `tokenizer.json` beside the weights
so that folders reload with `AutoTokenizer` and need no SentencePiece at run time.

Why not transformers alone: in transformers 5, `NllbTokenizer(vocab_file=...)` ignores the file, and loading a folder
holding `sentencepiece.bpe.model` drops the fairseq offset and the language codes. So the model file is read with
SentencePiece's own protobuf (`sentencepiece.sentencepiece_model_pb2`) and the BPE merges are transformers'
`generate_merges` ranked by piece score, which is SentencePiece's order; only the id layout is ours. The ids equal
fairseq2's tokenizer on the golden fixtures (`tests/test_tokenization_sonar.py`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..models.tokenization_sonar import SONAR_LANGUAGES, UNK_SURFACE

_SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
# SentencePiece piece types (sentencepiece_model.proto): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
# 6 byte.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6
_BPE = 2


def read_sentencepiece_model(path):
    """The `ModelProto` of a SentencePiece `.model` file, or a `ValueError` saying the file is not one."""
    from google.protobuf.message import DecodeError
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(Path(path).read_bytes())
    except DecodeError as error:
        raise ValueError(f"{path} is not a SentencePiece model file ({error}).") from error
    if not proto.pieces:
        raise ValueError(f"{path} holds no SentencePiece pieces; is it a SentencePiece `.model` file?")
    return proto


def _check_nllb_style(proto, path) -> None:
    """Refuse models whose encoding a BPE merge list cannot reproduce; warn on settings NLLB does not use."""
    trainer, normalizer, pieces = proto.trainer_spec, proto.normalizer_spec, proto.pieces
    problems = []
    if proto.HasField("trainer_spec") and trainer.model_type != _BPE:
        problems.append(f"model_type is {trainer.model_type} (SONAR/NLLB use BPE, {_BPE})")
    if trainer.byte_fallback or any(piece.type == _BYTE for piece in pieces):
        problems.append("byte fallback is on")
    ids = (trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id)
    if ids != (0, 1, 2, -1):
        problems.append(f"unk/bos/eos/pad ids are {ids} (NLLB: 0, 1, 2, none)")
    if len(pieces) < 3 or [piece.type for piece in pieces[:3]] != [_UNKNOWN, _CONTROL, _CONTROL]:
        problems.append("pieces 0-2 are not <unk>, <s>, </s>")
    if not (normalizer.add_dummy_prefix and normalizer.remove_extra_whitespaces and normalizer.escape_whitespaces):
        problems.append("its normalizer does not add a dummy prefix / remove extra spaces / escape spaces")
    if not trainer.split_by_whitespace or trainer.treat_whitespace_as_suffix or trainer.split_digits:
        problems.append("its pieces are not split at whitespace prefixes only")
    if problems:
        raise ValueError(f"{path} is not an NLLB-style SentencePiece BPE model: " + "; ".join(problems) + ".")
    odd = sorted({piece.type for piece in pieces[3:] if piece.type != _NORMAL})
    if odd:
        warnings.warn(f"{path} has pieces of SentencePiece types {odd} (NLLB has none); they are kept as ordinary "
                      "BPE pieces, so texts containing them may tokenize differently.",
                      UserWarning, stacklevel=3)  # fmt: skip
    if trainer.unk_surface != UNK_SURFACE:
        warnings.warn(f"{path} prints <unk> as {trainer.unk_surface!r}; `decode_ids` prints {UNK_SURFACE!r}.",
                      UserWarning, stacklevel=3)  # fmt: skip


def build_sonar_tokenizer(spm_path, model_max_length: int = 514):
    """An `NllbTokenizer` in the SONAR/HF NLLB id layout, from an NLLB-style SentencePiece BPE model file.

    Args:
        spm_path (`str` or `Path`): SentencePiece model (BPE, unk=0, bos=1, eos=2, no pad), e.g. SONAR's
            `sentencepiece.source.256000.model`.
        model_max_length (`int`, *optional*, defaults to 514): the encoder's position limit.

    Returns:
        `transformers.NllbTokenizer` with `src_lang`/`tgt_lang` "eng_Latn", `legacy_behaviour=False`. Its saved folder
        reloads with `AutoTokenizer.from_pretrained(folder)` (no remote code). For ids equal to fairseq2's on any
        text, encode with `encode_source` / `encode_target`.

    Example:
        ```python
        >>> tokenizer = build_sonar_tokenizer("sentencepiece.source.256000.model")
        >>> encode_source(tokenizer, ["Hello world."], "eng_Latn")  # [[eng_Latn, ..., </s>]]
        >>> tokenizer.save_pretrained("sonar_tokenizer")
        ```
    """
    from transformers import NllbTokenizer
    from transformers.tokenization_utils_base import generate_merges

    proto = read_sentencepiece_model(spm_path)
    _check_nllb_style(proto, spm_path)
    vocab = dict(_SPECIALS)
    scores: dict[str, float] = {}
    for index, piece in enumerate(proto.pieces[3:], start=3):
        if piece.piece in vocab or piece.piece in SONAR_LANGUAGES or piece.piece == "<mask>":
            raise ValueError(
                f"SentencePiece piece {index} {piece.piece!r} clashes with a special token or language code."
            )
        vocab[piece.piece] = index + 1  # fairseq offset: HF id = SentencePiece id + 1
        if piece.type == _NORMAL:
            scores[piece.piece] = piece.score
    for lang in SONAR_LANGUAGES:
        vocab[lang] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return NllbTokenizer(
        vocab=vocab,
        merges=generate_merges(vocab, vocab_scores=scores),  # by piece score, highest first: SentencePiece's order
        _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap or None,
        src_lang="eng_Latn",
        tgt_lang="eng_Latn",
        legacy_behaviour=False,
        extra_special_tokens=list(SONAR_LANGUAGES),
        model_max_length=model_max_length,
    )


__all__ = ["build_sonar_tokenizer", "read_sentencepiece_model"]
