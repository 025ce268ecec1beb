"""SONAR tokenization: NLLB-200's SentencePiece vocabulary in the HF NLLB id layout, with fairseq2's exact ids.

Layout (HF NLLB): `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, SentencePiece piece k (k >= 3) -> k + 1, the 202 language
codes at len(spm) + 1 + i, then `<mask>` (256,204 tokens for NLLB-200; the SONAR model has two more rows, fairseq2's
`<MMT_BT_DATA>` and `<SMT_BT_DATA>`, which no text maps to). fairseq2's layout differs only in ids 0-3
(`<pad>`=0, `<unk>`=1, `<s>`=2, `</s>`=3); the checkpoint converter permutes those embedding rows.

- Encoder input: `[lang] pieces </s>`. Decoder prompt `[</s>, lang]`; decoder targets `[lang] pieces </s>`.
- The tokenizer itself is a plain transformers `NllbTokenizer` (`legacy_behaviour=False`) built at conversion time
  (`sonar_llm_hf.conversion.tokenizer.build_sonar_tokenizer`); this file holds only what runs beside the weights.

Exactness. `encode_source`/`encode_target` reproduce SentencePiece (and so fairseq2, which calls it) id for id: they
run the tokenizer's BPE model behind SentencePiece's own normalisation (nmt_nfkc character map, then leading spaces
dropped, runs of spaces collapsed, trailing spaces and "▁" dropped, one "▁" prepended) and never match special
strings inside the text. Calling the `NllbTokenizer` directly (`tokenizer(text)`) is transformers' NLLB behaviour and
differs from SentencePiece only on unusual input: a text ending in whitespace (after normalisation, so also in "▁"
or in zero-width characters the normaliser deletes) gets an extra "▁" piece, and literal special strings ("</s>",
"eng_Latn", "<mask>") become special ids (fairseq2 spells them out as pieces). Empty and whitespace-only texts are
rejected with an error (fairseq2 would encode `[lang] </s>`); a text holding only characters the normaliser deletes
(zero-width, control) is encoded `[lang] </s>` like fairseq2 does, with a warning.

BPE itself: `tokenizers` applies merges by rank (piece score, then id; splits of one piece by shorter left part),
SentencePiece by piece score and then leftmost position. The two could only part on a tie between overlapping pairs
that make the same piece from different splits; with SentencePiece-trained BPE vocabularies we found none (0
differences on 44k natural-language lines with an 8k vocabulary and 320k random words with 20 models of 200-4,000
pieces over 2-5 letter alphabets, built to provoke such ties).

Decoding (`decode_ids`) is SentencePiece's `Decode` as fairseq2 calls it: control tokens (`<s>`, `<pad>`, `</s>`,
language codes, `<mask>`, rows past the vocabulary) vanish, `<unk>` reads " ⁇ ", "▁" becomes a space and only the
first piece's leading "▁" is dropped; no other clean-up, no stripping.
"""

from __future__ import annotations

import base64
import difflib
import json
import os
import warnings
import weakref
from collections.abc import Sequence

import torch
from torch import nn
from transformers.utils import logging

# SONAR's 202 languages in token-id order: the list NLLB-200 (and HF's `FAIRSEQ_LANGUAGE_CODES`) uses. Written out so
# that this file, shipped as Hub remote code, does not depend on a private transformers constant.
SONAR_LANGUAGES: tuple[str, ...] = (
    "ace_Arab", "ace_Latn", "acm_Arab", "acq_Arab", "aeb_Arab", "afr_Latn", "ajp_Arab", "aka_Latn", "amh_Ethi",
    "apc_Arab", "arb_Arab", "ars_Arab", "ary_Arab", "arz_Arab", "asm_Beng", "ast_Latn", "awa_Deva", "ayr_Latn",
    "azb_Arab", "azj_Latn", "bak_Cyrl", "bam_Latn", "ban_Latn", "bel_Cyrl", "bem_Latn", "ben_Beng", "bho_Deva",
    "bjn_Arab", "bjn_Latn", "bod_Tibt", "bos_Latn", "bug_Latn", "bul_Cyrl", "cat_Latn", "ceb_Latn", "ces_Latn",
    "cjk_Latn", "ckb_Arab", "crh_Latn", "cym_Latn", "dan_Latn", "deu_Latn", "dik_Latn", "dyu_Latn", "dzo_Tibt",
    "ell_Grek", "eng_Latn", "epo_Latn", "est_Latn", "eus_Latn", "ewe_Latn", "fao_Latn", "pes_Arab", "fij_Latn",
    "fin_Latn", "fon_Latn", "fra_Latn", "fur_Latn", "fuv_Latn", "gla_Latn", "gle_Latn", "glg_Latn", "grn_Latn",
    "guj_Gujr", "hat_Latn", "hau_Latn", "heb_Hebr", "hin_Deva", "hne_Deva", "hrv_Latn", "hun_Latn", "hye_Armn",
    "ibo_Latn", "ilo_Latn", "ind_Latn", "isl_Latn", "ita_Latn", "jav_Latn", "jpn_Jpan", "kab_Latn", "kac_Latn",
    "kam_Latn", "kan_Knda", "kas_Arab", "kas_Deva", "kat_Geor", "knc_Arab", "knc_Latn", "kaz_Cyrl", "kbp_Latn",
    "kea_Latn", "khm_Khmr", "kik_Latn", "kin_Latn", "kir_Cyrl", "kmb_Latn", "kon_Latn", "kor_Hang", "kmr_Latn",
    "lao_Laoo", "lvs_Latn", "lij_Latn", "lim_Latn", "lin_Latn", "lit_Latn", "lmo_Latn", "ltg_Latn", "ltz_Latn",
    "lua_Latn", "lug_Latn", "luo_Latn", "lus_Latn", "mag_Deva", "mai_Deva", "mal_Mlym", "mar_Deva", "min_Latn",
    "mkd_Cyrl", "plt_Latn", "mlt_Latn", "mni_Beng", "khk_Cyrl", "mos_Latn", "mri_Latn", "zsm_Latn", "mya_Mymr",
    "nld_Latn", "nno_Latn", "nob_Latn", "npi_Deva", "nso_Latn", "nus_Latn", "nya_Latn", "oci_Latn", "gaz_Latn",
    "ory_Orya", "pag_Latn", "pan_Guru", "pap_Latn", "pol_Latn", "por_Latn", "prs_Arab", "pbt_Arab", "quy_Latn",
    "ron_Latn", "run_Latn", "rus_Cyrl", "sag_Latn", "san_Deva", "sat_Beng", "scn_Latn", "shn_Mymr", "sin_Sinh",
    "slk_Latn", "slv_Latn", "smo_Latn", "sna_Latn", "snd_Arab", "som_Latn", "sot_Latn", "spa_Latn", "als_Latn",
    "srd_Latn", "srp_Cyrl", "ssw_Latn", "sun_Latn", "swe_Latn", "swh_Latn", "szl_Latn", "tam_Taml", "tat_Cyrl",
    "tel_Telu", "tgk_Cyrl", "tgl_Latn", "tha_Thai", "tir_Ethi", "taq_Latn", "taq_Tfng", "tpi_Latn", "tsn_Latn",
    "tso_Latn", "tuk_Latn", "tum_Latn", "tur_Latn", "twi_Latn", "tzm_Tfng", "uig_Arab", "ukr_Cyrl", "umb_Latn",
    "urd_Arab", "uzn_Latn", "vec_Latn", "vie_Latn", "war_Latn", "wol_Latn", "xho_Latn", "ydd_Hebr", "yor_Latn",
    "yue_Hant", "zho_Hans", "zho_Hant", "zul_Latn",
)  # fmt: skip

SPACE = "\u2581"  # SentencePiece's "▁"
UNK_SURFACE = " \u2047 "  # what SentencePiece (and so fairseq2) prints for <unk>: " ⁇ "
# English names people type instead of codes (check_language hints only).
_LANGUAGE_NAMES = {
    "english": "eng_Latn", "french": "fra_Latn", "german": "deu_Latn", "spanish": "spa_Latn", "italian": "ita_Latn",
    "portuguese": "por_Latn", "russian": "rus_Cyrl", "chinese": "zho_Hans", "japanese": "jpn_Jpan",
    "korean": "kor_Hang", "arabic": "arb_Arab", "hindi": "hin_Deva", "dutch": "nld_Latn", "polish": "pol_Latn",
    "turkish": "tur_Latn", "ukrainian": "ukr_Cyrl", "persian": "pes_Arab", "vietnamese": "vie_Latn",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Exact (SentencePiece-equal) encoding


_EXACT_BACKENDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _exact_backend(tokenizer):
    """A `tokenizers.Tokenizer` sharing `tokenizer`'s BPE model, with SentencePiece's normalisation and no added
    tokens (so "</s>" or "eng_Latn" inside a text are spelled out as pieces, as fairseq2 does). Cached per
    tokenizer."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

    cached = _EXACT_BACKENDS.get(tokenizer)
    if cached is not None and cached[0] == len(tokenizer):
        return cached[1]
    source = tokenizer.backend_tokenizer
    steps = []
    config = json.loads(source.normalizer.__getstate__()) if source.normalizer is not None else {}
    for step in config.get("normalizers", [config]):
        if step.get("type") == "Precompiled" and step.get("precompiled_charsmap"):
            steps.append(normalizers.Precompiled(base64.b64decode(step["precompiled_charsmap"])))
    steps += [
        normalizers.Replace(Regex(" {2,}"), " "),  # SentencePiece collapses runs of spaces ...
        normalizers.Replace(Regex(r"\A +"), ""),  # ... drops leading ones ...
        normalizers.Replace(Regex(f"[ {SPACE}]+\\z"), ""),  # ... and trailing ones, "▁" included (it escapes first)
        normalizers.Prepend(SPACE),  # dummy prefix, even before a literal "▁" (not added to an empty text)
    ]
    exact = Tokenizer(source.model)
    exact.normalizer = normalizers.Sequence(steps)
    exact.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never", split=True)
    _EXACT_BACKENDS[tokenizer] = (len(tokenizer), exact)
    return exact


def _pieces(tokenizer, texts: list[str]) -> list[list[int]]:
    if getattr(tokenizer, "backend_tokenizer", None) is None:  # not a `tokenizers` tokenizer: its own best effort
        return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return [encoding.ids for encoding in _exact_backend(tokenizer).encode_batch(texts, add_special_tokens=False)]


def check_language(lang: str, languages: Sequence[str] = SONAR_LANGUAGES) -> str:
    """Return `lang` if it is one of `languages`, else raise a `ValueError` naming the closest codes.

    Example:
        ```python
        >>> check_language("fra_Latn")
        'fra_Latn'
        >>> check_language("eng_latn")
        ValueError: Unknown language code 'eng_latn'. Did you mean: eng_Latn? SONAR codes look like 'eng_Latn', ...
        ```
    """
    if isinstance(lang, str) and lang in languages:
        return lang
    guesses: list[str] = []
    if isinstance(lang, str):
        folded = lang.strip().lower().replace("-", "_")
        guesses = [code for code in languages if code.lower() == folded]  # only the case (or a dash) is wrong
        if not guesses and _LANGUAGE_NAMES.get(folded) in languages:  # an English language name
            guesses = [_LANGUAGE_NAMES[folded]]
        if not guesses:
            guesses = difflib.get_close_matches(lang, languages, n=3, cutoff=0.6)
            guesses += [code for code in languages if len(folded) >= 3 and code.lower().startswith(folded[:3])]
    guesses = list(dict.fromkeys(guesses))[:3]
    hint = f" Did you mean: {', '.join(guesses)}?" if guesses else ""
    raise ValueError(
        f"Unknown language code {lang!r}.{hint} SONAR codes look like 'eng_Latn', 'fra_Latn', 'deu_Latn' "
        f"(ISO 639-3 + script; {len(languages)} in `SONAR_LANGUAGES`)."
    )


def validate_texts(texts) -> list[str]:
    """`texts` (a string or a list of strings) as a list; raise on anything SONAR cannot encode.

    Raises:
        TypeError: `texts` is None or not a string/list/tuple, or an item is not a string (its index and type named).
        ValueError: an item is empty or whitespace only (its index named).
    """
    if isinstance(texts, str):
        texts = [texts]
    if texts is None or not isinstance(texts, (list, tuple)):
        raise TypeError(f"Expected a string or a list of strings, got {type(texts).__name__}.")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"Item {index} is {type(text).__name__}, not a string.")
        if not text.strip():
            raise ValueError(f"Item {index} is empty or whitespace only ({text!r}); SONAR needs text to encode.")
    return list(texts)


def _encode(tokenizer, texts, lang: str, max_length: int, kind: str, truncation: bool = True) -> list[list[int]]:
    texts = validate_texts(texts)
    if not isinstance(truncation, bool):
        raise TypeError(f"`truncation` must be True (cut long texts, warning) or False (raise), got {truncation!r}.")
    if max_length < 3:
        raise ValueError(f"`max_length` must leave room for the language token, a piece and `</s>`, got {max_length}.")
    lang_id = tokenizer.convert_tokens_to_ids(check_language(lang))
    eos_id = tokenizer.convert_tokens_to_ids("</s>")
    rows, dropped, empty = [], {}, []  # dropped: text index -> tokens cut
    for index, ids in enumerate(_pieces(tokenizer, texts)):
        if not ids:  # only characters the normaliser deletes (zero-width, controls): fairseq2 gives `[lang] </s>`
            empty.append(index)
        if len(ids) + 2 > max_length:
            dropped[index] = len(ids) + 2 - max_length
            ids = ids[: max_length - 2]
        rows.append([lang_id, *ids, eos_id])
    if dropped and not truncation:
        lengths = ", ".join(f"text {i}: {n + max_length} tokens" for i, n in list(dropped.items())[:10])
        raise ValueError(
            f"{len(dropped)} of {len(texts)} {kind} text(s) exceed `max_length={max_length}` tokens ({lengths}"
            f"{', ...' if len(dropped) > 10 else ''}) and `truncation=False`. Split long texts into sentences, or "
            "pass `truncation=True` to cut them (keeping `</s>`)."
        )
    if empty:
        warnings.warn(
            f"{kind.capitalize()} text(s) {empty[:10]} hold no tokens after SentencePiece normalisation (e.g. only "
            "zero-width or control characters); they are encoded as `[lang] </s>`, as fairseq2 does.",
            UserWarning,
            stacklevel=3,
        )
    if dropped:
        worst = ", ".join(f"text {i}: {n}" for i, n in sorted(dropped.items(), key=lambda item: -item[1])[:5])
        warnings.warn(
            f"{len(dropped)} of {len(texts)} {kind} text(s) exceeded {max_length} tokens and were truncated, dropping "
            f"{sum(dropped.values())} token(s) in all ({worst}{', ...' if len(dropped) > 5 else ''}); `</s>` was "
            "kept (fairseq2 slices it off). Split long texts into sentences for faithful embeddings, or pass "
            "`truncation=False` to get an error instead.",
            UserWarning,
            stacklevel=3,
        )
    return rows


def encode_source(
    tokenizer, texts, lang: str = "eng_Latn", max_length: int = 514, truncation: bool = True
) -> list[list[int]]:
    """Encoder input ids `[lang] pieces </s>` per text, equal to fairseq2's NLLB tokenizer in source mode.

    Texts longer than `max_length` tokens (the encoder's 514 positions) keep `[lang]`, the first pieces and `</s>`, and
    one `UserWarning` per call says how many texts were cut and how many tokens were dropped. fairseq2's pipeline
    slices `ids[:max_length]` instead, silently dropping `</s>`; we keep it because the model never saw a sentence
    without it. `truncation=False` (strict mode) raises a `ValueError` naming the over-long texts instead.

    Example:
        ```python
        >>> encode_source(tokenizer, ["Le chat."], "fra_Latn")  # [[fra_Latn id, ..., 2]]
        ```
    """
    return _encode(tokenizer, texts, lang, max_length, "source", truncation)


def encode_target(
    tokenizer, texts, lang: str = "eng_Latn", max_length: int = 512, truncation: bool = True
) -> list[list[int]]:
    """Decoder target ids `[lang] pieces </s>` per text: what the SONAR decoder must produce after its `</s>` start
    token. fairseq2's target mode is `</s> lang pieces </s>`, i.e. the start token followed by these; the decoder
    input is these shifted right behind `</s>` (`decoder_start_token_id=2`). Same validation and truncation (keeping
    `</s>`, 512 decoder positions by default; `truncation=False` raises) as `encode_source`."""
    return _encode(tokenizer, texts, lang, max_length, "target", truncation)


def decode_ids(tokenizer, ids_batch: Sequence[Sequence[int]]) -> list[str]:
    """Texts of id sequences, exactly as fairseq2 (SentencePiece `Decode`) prints them.

    Special tokens and language codes vanish (`skip_special_tokens=True`), `<unk>` reads " ⁇ ", ids past the
    vocabulary (the model's two extra rows) vanish, and there is no clean-up (`clean_up_tokenization_spaces=False`)
    and no stripping: only the first piece's leading "▁" is dropped.
    """
    ids_batch = list(ids_batch) if not isinstance(ids_batch, (str, bytes)) else [ids_batch]
    if any(isinstance(ids, (int, str, bytes)) or getattr(ids, "ndim", 1) == 0 for ids in ids_batch):
        raise TypeError("`decode_ids` takes a batch of id sequences, e.g. [[...], [...]], not one flat list.")
    unk_id = tokenizer.unk_token_id
    silent = set(tokenizer.all_special_ids) | set(tokenizer.convert_tokens_to_ids(list(SONAR_LANGUAGES)))
    silent.discard(unk_id)
    size = len(tokenizer)
    texts = []
    for ids in ids_batch:
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = [int(token_id) for token_id in ids]
        if any(token_id < 0 for token_id in ids):
            raise ValueError(f"Negative token id in {ids} (remove padding labels such as -100 first).")
        ids = [token_id for token_id in ids if token_id not in silent and token_id < size]
        text = ""
        for token_id, piece in zip(ids, tokenizer.convert_ids_to_tokens(ids)):
            if token_id == unk_id:
                text += UNK_SURFACE
                continue
            if not text and piece.startswith(SPACE):
                piece = piece[1:]
            text += piece.replace(SPACE, " ")
        texts.append(text)
    return texts


def suppressed_token_ids(tokenizer, model_vocab_size: int | None = None) -> list[int]:
    """Ids the SONAR decoder must never generate: `<pad>`, `<s>`, `<mask>` and model rows past the tokenizer's
    vocabulary (`model_vocab_size` defaults to `len(tokenizer)`).

    The real model has 256,206 rows but the HF vocabulary 256,204: rows 256,204-256,205 are fairseq2's
    `<MMT_BT_DATA>`, `<SMT_BT_DATA>` data tags and `<mask>` (256,203) is its `<MINED_DATA>` tag; none is text.
    fairseq2 0.5+ beam search masks only `<pad>` (sonar-space 0.4 took the model's legacy `pad_idx=1`, which in
    fairseq2 order is `<unk>`, and masked that instead). `<s>`, the tags and the extra rows are never training
    targets, so masking them changes no sensible output; `</s>`, `<unk>` and language codes stay allowed as in
    fairseq2.
    """
    size = len(tokenizer) if model_vocab_size is None else int(model_vocab_size)
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("<mask>")}
    ids.update(range(len(tokenizer), size))
    return sorted(i for i in ids if i is not None and 0 <= i < size)


# Loading and saving SONAR models as one unit: strict weights, and the tokenizer that travels with them.
#
# A SONAR model without its tokenizer silently produces empty sentences, and a randomly initialised weight silently
# produces garbage, so both are handled here for every model class:
# - `save_pretrained` (and so `push_to_hub`, which calls it) writes the tokenizer beside the weights;
# - `from_pretrained` refuses missing and unexpected weights by name, and loads the tokenizer from the same place with
#   the same `revision`, `subfolder`, `token`, `cache_dir` and `local_files_only`;
# - a folder without a tokenizer still loads, but anything that needs one raises an error saying what to pass. A
#   tokenizer without SentencePiece pieces (what transformers builds from a folder holding no tokenizer files) is
#   never used. Tokenizer files that are there but cannot be read (truncated, corrupt, no pieces) are an error at
#   loading: the model would otherwise load as if it had none;
# - `execution_device` says where a module loaded with `device_map` computes (its parameters may be offloaded to
#   "meta").

logger = logging.get_logger(__name__)

# The files a saved SONAR tokenizer leaves in a folder (`NllbTokenizer.save_pretrained`).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model")
# `from_pretrained` options that say where the files are; the tokenizer is read with the same ones.
_LOCATION_KWARGS = ("revision", "subfolder", "token", "cache_dir", "local_files_only", "force_download", "proxies")
_NON_PIECES = 4 + len(SONAR_LANGUAGES) + 1  # <s> <pad> </s> <unk>, the language codes, <mask>


def has_pieces(tokenizer) -> bool:
    """Whether `tokenizer` holds SentencePiece pieces, not only special tokens and language codes."""
    return tokenizer is not None and len(tokenizer) > _NON_PIECES


def load_sonar_tokenizer(source: str, **location):
    """The SONAR tokenizer saved in a folder or Hub repo, or None (with a warning) when it holds none. Tokenizer
    files in a local folder that cannot be read, or that hold no SentencePiece pieces, raise a `ValueError`."""
    # Naming the class avoids AutoTokenizer reading config.json, which would ask for trust_remote_code again.
    from transformers import NllbTokenizer

    folder = os.path.join(source, location.get("subfolder") or "")
    present = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(folder, name))]
    damaged = (
        f"The SONAR tokenizer saved in {source!r} ({', '.join(present)}) cannot be used: {{}}. Copy the tokenizer "
        "files again from the converted model, or delete them and pass `tokenizer=` to `from_pretrained`."
    )
    try:
        tokenizer = NllbTokenizer.from_pretrained(source, **location)
    except Exception as error:  # JSON, tokenizers and sentencepiece errors alike: the files are there but broken
        if not present and isinstance(error, OSError):  # a Hub repo without tokenizer files
            logger.warning(f"No SONAR tokenizer could be loaded from {source!r} ({error}).")
            return None
        raise ValueError(damaged.format(f"{type(error).__name__}: {error}")) from error
    if not has_pieces(tokenizer):
        if present:
            raise ValueError(damaged.format(f"they hold {len(tokenizer)} tokens and no SentencePiece pieces"))
        logger.warning(
            f"{source!r} holds no SONAR tokenizer (no tokenizer.json with SentencePiece pieces); text methods will "
            "ask for one. Set `model.tokenizer = ...` or save the model together with its tokenizer."
        )
        return None
    return tokenizer


def execution_device(module: nn.Module) -> torch.device:
    """Where `module`'s first layer computes, hence where its inputs belong. `module.device` is its first parameter's
    device, which is "meta" when `device_map` offloads the module to CPU or disk: accelerate's hook then names the
    device it runs on (`execution_device`)."""
    for sub in module.modules():
        hooks = getattr(sub, "_hf_hook", None)
        for hook in getattr(hooks, "hooks", [hooks]):  # a SequentialHook holds several
            device = getattr(hook, "execution_device", None)
            if device is not None:
                return torch.device(device)
        for parameter in sub.parameters(recurse=False):
            if parameter.device.type != "meta":
                return parameter.device
    return torch.device("cpu")


class SonarTokenizerMixin:
    """`tokenizer` attribute, strict `from_pretrained` and tokenizer-saving `save_pretrained` for SONAR models."""

    _tokenizer = None

    @property
    def tokenizer(self):
        """The SONAR tokenizer: loaded with the weights, or set by hand (`model.tokenizer = tokenizer`)."""
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        if value is not None and not has_pieces(value):
            raise ValueError(
                f"This tokenizer has {len(value)} tokens: only special tokens and language codes, no SentencePiece "
                "pieces. Load the SONAR tokenizer saved with a converted model "
                "(`AutoTokenizer.from_pretrained(folder)`)."
            )
        self._tokenizer = value

    def _tokenizer_or_raise(self, tokenizer=None):
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            source = getattr(self.config, "_name_or_path", "") or "this model"
            raise ValueError(
                f"{type(self).__name__} has no SONAR tokenizer: {source!r} was loaded without one. Pass "
                "`tokenizer=AutoTokenizer.from_pretrained(folder_with_tokenizer)` to this call, or set "
                "`model.tokenizer = ...` once; `save_pretrained` then writes it beside the weights."
            )
        if not has_pieces(tokenizer):
            raise ValueError(f"The tokenizer passed has {len(tokenizer)} tokens and no SentencePiece pieces.")
        return tokenizer

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but missing, unexpected or mis-shaped weights are an error (never a
        random initialisation, also with `ignore_mismatched_sizes=True`), and the tokenizer is loaded from the same
        place (or taken from `tokenizer=`)."""
        wants_info = kwargs.pop("output_loading_info", False)
        tokenizer = kwargs.pop("tokenizer", None)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = []
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = sorted(str(key) for key in info.get(kind, []))  # mismatched: (name, saved shape, model shape)
            if keys:
                shown = ", ".join(keys[:8]) + (f" … ({len(keys)} in all)" if len(keys) > 8 else "")
                problems.append(f"{kind.replace('_', ' ')}: {shown}")
        if problems:
            raise ValueError(
                f"{pretrained_model_name_or_path!r} does not hold exactly the weights of a {cls.__name__} ("
                + "; ".join(problems)
                + "). Refusing to initialise weights randomly or to drop any; convert the checkpoint with the "
                "scripts in `conversion/`, which verify what they write."
            )
        location = {key: kwargs[key] for key in _LOCATION_KWARGS if kwargs.get(key) is not None}
        if tokenizer is None:
            tokenizer = load_sonar_tokenizer(str(pretrained_model_name_or_path), **location)
        model.tokenizer = tokenizer
        model._after_loading()
        return (model, info) if wants_info else model

    def _after_loading(self) -> None:
        """Hook for subclasses (SONAR-LLM re-freezes SONAR)."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the tokenizer beside the weights (so `push_to_hub` uploads it)."""
        transformed = sorted({f"{type(module).__name__} ({name} {getattr(module, name)})" for module in self.modules()
                              for name in ("quantized", "packed") if getattr(module, name, None)})  # fmt: skip
        if transformed:
            raise ValueError(
                f"This model holds SONAR parts transformed for inference only: {', '.join(transformed)}; their "
                "weights are no longer plain fp32 tensors, so a saved folder would be incomplete. Save before "
                "`quantize_sonar` / `pack_sonar`, call `unpack_sonar(model)` after packing, or load the saved folder "
                "again."
            )
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.tokenizer is not None and kwargs.get("is_main_process", True):
            self.tokenizer.save_pretrained(save_directory)
        elif self.tokenizer is None:
            logger.warning(
                f"Saved {type(self).__name__} without a tokenizer: set `model.tokenizer` first, or the saved folder "
                "cannot encode or decode text."
            )


__all__ = [
    "SonarTokenizerMixin",
    "execution_device",
    "has_pieces",
    "load_sonar_tokenizer",
    "SONAR_LANGUAGES",
    "check_language",
    "validate_texts",
    "encode_source",
    "encode_target",
    "decode_ids",
    "suppressed_token_ids",
]
