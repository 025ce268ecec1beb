"""From a `datasets.Dataset` of documents to SONAR-LLM training examples, and the collator that batches them.

    examples = prepare_dataset(raw, model, text_column="text")   # sentences, SONAR embeddings, target ids
    trainer = Trainer(model, args, train_dataset=examples, data_collator=SonarLLMDataCollator())

Steps (as the reference's `sonar_encoding.py`, offline): split each document into sentences (sentencex), keep the first
`max_sentences` (32), append the end sentence ("End of sequence.") and, if the model was trained with it, prepend
the begin sentence; embed every sentence with the model's frozen SONAR encoder (length-sorted batches); tokenize the
SONAR decoder targets `[lang] pieces </s>`.

Each example holds `sentence_embeddings` (T x d float32) and `labels` (T lists of target ids), the names of
`forward`'s arguments, so `Trainer`'s default `remove_unused_columns=True` keeps exactly them; plus `sentences`,
`lang` and `num_sentences` for inspection.

Caching: every step is a `datasets.map` with an explicit fingerprint (the input dataset's fingerprint, the settings,
a digest of the SONAR encoder's weights and of the tokenizer's vocabulary), so a rerun reuses the cache files. The
embedding pass runs in shards of `shard_size` documents, each its own cache file: an interrupted run resumes at the
first unfinished shard, and changing only `batch_size` (say after running out of memory) keeps the finished shards.
Datasets that live in memory (`Dataset.from_dict`, ...) have no cache folder: pass `cache_file_name=` to cache them.

Bad input, all counted, none dropped silently:

- a missing text (or language) column: `ValueError` naming the columns;
- a row that is not text (None, a number, ...): `TypeError` naming the row, or skipped and counted with
  `skip_bad_rows=True`;
- a language code SONAR does not know: `ValueError` naming the row and close codes, or skipped and counted with
  `skip_bad_rows=True`;
- an empty or whitespace-only document: skipped and counted (no sentence to learn from);
- fewer than 2 entries after adding the end/begin sentences (only possible with `add_eos=False`): skipped and
  counted (nothing to predict);
- no document left: `ValueError` with the counts;
- a document of more than `max_sentences` sentences: kept, cut to its first `max_sentences` (the reference does the
  same), and counted: "cut 3 of 98 documents to their first 32 sentences (41 sentences dropped)".

The counts are printed and logged (`sonar_llm_hf.data`), e.g. "kept 98 of 100 documents; skipped 2 empty".
A missing language in the language column (None or "") means `default_lang`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter

import numpy as np
import torch

from ..models.generation_sonar_llm import split_sentences
from ..models.tokenization_sonar import check_language, encode_target

logger = logging.getLogger(__name__)

# Bump when the stored format or the splitting/embedding logic changes, so old caches are not reused.
DATA_FORMAT_VERSION = 4  # 4: sentencex replaced pysbd
DEFAULT_EOS_SENTENCE = "End of sequence."
DEFAULT_BEGIN_SENTENCE = "Begin of text."

_REASONS = {
    "empty": "empty (no sentence)",
    "too_short": "with fewer than 2 entries (nothing to predict; add_eos=False)",
    "not_text": "not text",
    "unknown_language": "with an unknown language code",
}


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _encoder_fingerprint(encoder) -> str:
    """Identifies the SONAR encoder's weights and configuration: cheap (a few statistics per tensor), deterministic."""
    digest = hashlib.sha256(json.dumps(encoder.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in encoder.state_dict().items():
        flat = tensor.detach().float().flatten()
        stats = torch.stack([flat.sum(), flat.abs().sum(), flat[: min(16, flat.numel())].sum()]).tolist()
        digest.update(f"{name}{tuple(tensor.shape)}{stats}".encode())
    return digest.hexdigest()[:16]


def _tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return _digest(type(tokenizer).__name__, vocab, getattr(tokenizer, "model_max_length", None))


def _splitter_version() -> str | None:
    """The sentence splitter's version, part of the split step's fingerprint (new rules, new sentences)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sentencex")
    except PackageNotFoundError:  # importable but not installed as a distribution (a source build)
        return None


def _cache_path(cache_file_name: str | None, step: str, fingerprint: str) -> str | None:
    """`data/train.arrow` -> `data/train-embed-3-<fingerprint>.arrow`: the fingerprint in the name, so a changed
    model or setting never loads a stale file."""
    if cache_file_name is None:
        return None
    stem, ext = os.path.splitext(str(cache_file_name))
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    return f"{stem}-{step}-{fingerprint}{ext or '.arrow'}"


def _report(counts: Counter, total: int) -> None:
    skipped = {reason: n for reason, n in counts.items() if reason and n}
    if not skipped:
        return
    kept = total - sum(skipped.values())
    details = ", ".join(f"{n} {_REASONS[reason]}" for reason, n in sorted(skipped.items()))
    message = f"kept {kept} of {total} documents; skipped {details}"
    print(f"sonar_llm_hf.data: {message}")  # printed, so that no skip goes unseen; logged for log files
    logger.info(message)


def _report_cuts(cuts: list[int], kept: int, max_sentences: int) -> None:
    cut_documents = sum(1 for n in cuts if n)
    if not cut_documents:
        return
    message = (f"cut {cut_documents} of {kept} documents to their first {max_sentences} sentences "
               f"({sum(cuts)} sentences dropped; max_sentences / --max_sentences keeps more)")  # fmt: skip
    print(f"sonar_llm_hf.data: {message}")
    logger.warning(message)


def split_documents(
    dataset,
    text_column: str = "text",
    lang_column: str | None = None,
    default_lang: str = "eng_Latn",
    max_sentences: int = 32,
    eos_sentence: str | None = DEFAULT_EOS_SENTENCE,
    begin_sentence: str | None = None,
    skip_bad_rows: bool = False,
    num_proc: int | None = None,
    cache_file_name: str | None = None,
):
    """Documents -> `sentences` (+ `lang`): offline splitting, the first `max_sentences`, the end (and begin)
    sentence. See the module docstring for what happens to bad rows; nothing is dropped without a printed count."""
    if text_column not in dataset.column_names:
        raise ValueError(f"The dataset has no column {text_column!r}; its columns are {dataset.column_names}.")
    if lang_column is not None and lang_column not in dataset.column_names:
        raise ValueError(f"The dataset has no column {lang_column!r}; its columns are {dataset.column_names}.")
    if max_sentences < 1:
        raise ValueError(f"`max_sentences` must be at least 1, got {max_sentences}.")
    check_language(default_lang)
    clashes = {"sentences", "lang", "drop_reason", "sentences_cut", "sentence_embeddings", "labels", "num_sentences"}
    clashes &= set(dataset.column_names) - {lang_column if lang_column == "lang" else None}
    if "lang" in clashes:
        raise ValueError(
            "The dataset has a 'lang' column: pass lang_column='lang' (--lang_column lang) to use it, or rename it."
        )
    if clashes:
        raise ValueError(f"The dataset already has column(s) {sorted(clashes)}, which preparation writes.")
    extra = 1 if eos_sentence else 0
    extra += 1 if begin_sentence else 0

    def split(batch, indices):
        out = {"sentences": [], "lang": [], "drop_reason": [], "sentences_cut": []}
        langs = batch[lang_column] if lang_column else [None] * len(batch[text_column])
        for index, text, lang in zip(indices, batch[text_column], langs):
            reason, sentences, cut = "", [], 0
            if not isinstance(text, str):
                if not skip_bad_rows:
                    raise TypeError(
                        f"Row {index}: column {text_column!r} holds {type(text).__name__}, not text. "
                        "Fix the data, or pass skip_bad_rows=True (--skip_bad_rows) to skip such rows with a count."
                    )
                reason = "not_text"
            try:
                lang = check_language(lang or default_lang)
            except ValueError as error:
                if not skip_bad_rows:
                    raise ValueError(f"Row {index}: {error}") from None
                reason, lang = reason or "unknown_language", default_lang
            if not reason:
                sentences = split_sentences(text, lang)
                cut = max(0, len(sentences) - max_sentences)
                sentences = sentences[:max_sentences]
                if not sentences:
                    reason = "empty"
                elif len(sentences) + extra < 2:
                    reason = "too_short"
                if begin_sentence:
                    sentences = [begin_sentence, *sentences]
                if eos_sentence:
                    sentences = [*sentences, eos_sentence]
            out["sentences"].append(sentences if not reason else [])
            out["lang"].append(lang)
            out["drop_reason"].append(reason)
            out["sentences_cut"].append(cut if not reason else 0)
        return out

    settings = [text_column, lang_column, default_lang, max_sentences, eos_sentence, begin_sentence, skip_bad_rows]
    fingerprint = _digest(dataset._fingerprint, "split", settings, _splitter_version(), DATA_FORMAT_VERSION)
    remove = [lang_column] if lang_column == "lang" else []
    split_set = dataset.map(
        split, batched=True, with_indices=True, num_proc=num_proc, remove_columns=remove, desc="Splitting sentences",
        new_fingerprint=fingerprint, cache_file_name=_cache_path(cache_file_name, "split", fingerprint),
    )  # fmt: skip
    counts = Counter(split_set["drop_reason"])
    _report(counts, len(split_set))
    _report_cuts(split_set["sentences_cut"], counts[""], max_sentences)
    if counts[""] == 0:
        raise ValueError(
            f"No document is left to train on ({len(split_set)} rows: "
            + ", ".join(f"{n} {_REASONS[r]}" for r, n in sorted(counts.items()) if r) + ")."
        )  # fmt: skip
    if counts[""] < len(split_set):
        filter_fingerprint = _digest(fingerprint, "keep")
        split_set = split_set.filter(
            lambda reason: reason == "", input_columns="drop_reason", new_fingerprint=filter_fingerprint,
            cache_file_name=_cache_path(cache_file_name, "keep", filter_fingerprint), desc="Skipping bad documents",
        )  # fmt: skip
    return split_set.remove_columns(["drop_reason", "sentences_cut"])


def prepare_dataset(
    dataset,
    model,
    tokenizer=None,
    text_column: str = "text",
    lang_column: str | None = None,
    default_lang: str | None = None,
    max_sentences: int = 32,
    add_eos: bool = True,
    add_begin: bool | None = None,
    eos_sentence: str | None = None,
    begin_sentence: str | None = None,
    batch_size: int = 64,
    max_target_length: int = 256,
    shard_size: int = 1000,
    skip_bad_rows: bool = False,
    num_proc: int | None = None,
    cache_file_name: str | None = None,
    progress_bar: bool = True,
):
    """Split, embed with the frozen SONAR encoder (length-sorted batches, a progress bar per shard), tokenize targets.

    Args:
        dataset: a `datasets.Dataset` (or `DatasetDict`: each split is prepared) with a text column.
        model: a `SonarLLMForCausalSentenceModeling` (its encoder, tokenizer and sentence settings are used) or a
            bare `SonarTextEncoder`. Move it to a GPU first to embed there.
        tokenizer: the SONAR tokenizer (default: the model's).
        lang_column / default_lang: per-document SONAR language codes; the default is the model's `default_lang`.
        max_sentences: sentences kept from the start of each document (the paper: 32), before the end sentence.
        add_eos / add_begin: append `eos_sentence` / prepend `begin_sentence` (defaults: the model config's
            sentences; `add_begin` defaults to `config.add_begin`).
        batch_size: sentences per SONAR encoder call.
        max_target_length: target tokens kept per sentence (the reference: 256), `</s>` kept.
        shard_size: documents per cached embedding shard (the unit of resumption).
        skip_bad_rows: skip (and count) rows that are not text or have an unknown language, instead of raising.
        num_proc: processes for sentence splitting (the embedding pass stays in this process).
        cache_file_name: a path prefix for the cache files (needed to cache in-memory datasets); each step's file
            name carries its fingerprint.
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        options = dict(tokenizer=tokenizer, text_column=text_column, lang_column=lang_column,
                       default_lang=default_lang, max_sentences=max_sentences, add_eos=add_eos, add_begin=add_begin,
                       eos_sentence=eos_sentence, begin_sentence=begin_sentence, batch_size=batch_size,
                       max_target_length=max_target_length, shard_size=shard_size, skip_bad_rows=skip_bad_rows,
                       num_proc=num_proc, progress_bar=progress_bar)  # fmt: skip
        return datasets.DatasetDict({
            name: prepare_dataset(part, model, cache_file_name=_split_cache(cache_file_name, name), **options)
            for name, part in dataset.items()
        })  # fmt: skip

    encoder = getattr(model, "sonar_encoder", model)
    config = getattr(model, "config", None) if encoder is not model else None
    tokenizer = tokenizer or getattr(model, "tokenizer", None) or getattr(encoder, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("The model has no SONAR tokenizer; pass `tokenizer=`.")
    add_begin = getattr(config, "add_begin", False) if add_begin is None else add_begin
    eos_sentence = eos_sentence or getattr(config, "eos_sentence", DEFAULT_EOS_SENTENCE)
    begin_sentence = begin_sentence or getattr(config, "begin_sentence", DEFAULT_BEGIN_SENTENCE)
    default_lang = default_lang or getattr(config, "default_lang", "eng_Latn")
    if not dataset.cache_files and cache_file_name is None:
        logger.warning(
            "The dataset lives in memory (no cache files): its SONAR embeddings will not be cached. Pass "
            "`cache_file_name=` (or save it with `save_to_disk` and reload it) to cache them."
        )
    split_set = split_documents(
        dataset, text_column, lang_column, default_lang, max_sentences, eos_sentence if add_eos else None,
        begin_sentence if add_begin else None, skip_bad_rows=skip_bad_rows, num_proc=num_proc,
        cache_file_name=cache_file_name,
    )  # fmt: skip
    dim = encoder.config.d_model

    def embed(batch):
        flat, langs, bounds = [], [], [0]
        for sentences, lang in zip(batch["sentences"], batch["lang"]):
            flat.extend(sentences)
            langs.extend([lang] * len(sentences))
            bounds.append(len(flat))
        embeddings = torch.empty(len(flat), dim)
        labels: list = [None] * len(flat)
        for lang in sorted(set(langs)):
            rows = [i for i, row_lang in enumerate(langs) if row_lang == lang]
            texts = [flat[i] for i in rows]
            embeddings[rows] = encoder.encode(texts, lang=lang, batch_size=batch_size, tokenizer=tokenizer,
                                              progress_bar=False).float().cpu()  # fmt: skip
            for i, ids in zip(rows, encode_target(tokenizer, texts, lang, max_length=max_target_length)):
                labels[i] = ids
        array = embeddings.numpy()
        spans = list(zip(bounds[:-1], bounds[1:]))
        return {
            "sentence_embeddings": [array[a:b] for a, b in spans],
            "labels": [labels[a:b] for a, b in spans],
            "num_sentences": [b - a for a, b in spans],
        }

    features = split_set.features.copy()
    features["sentence_embeddings"] = datasets.List(datasets.List(datasets.Value("float32")))
    features["labels"] = datasets.List(datasets.List(datasets.Value("int32")))
    features["num_sentences"] = datasets.Value("int32")
    # batch_size is left out on purpose: it does not change the embeddings beyond float noise.
    settings = _digest(_encoder_fingerprint(encoder), _tokenizer_fingerprint(tokenizer), max_target_length,
                       DATA_FORMAT_VERSION)  # fmt: skip
    shards = []
    num_shards = max(1, -(-len(split_set) // shard_size))
    for index in range(num_shards):
        shard = split_set.shard(num_shards, index, contiguous=True)
        fingerprint = _digest(shard._fingerprint, "embed", settings)
        desc = f"SONAR embeddings, shard {index + 1}/{num_shards}" if progress_bar else None
        shards.append(
            shard.map(embed, batched=True, batch_size=batch_size, features=features, new_fingerprint=fingerprint,
                      cache_file_name=_cache_path(cache_file_name, f"embed{index}", fingerprint), desc=desc)
        )  # fmt: skip
    return shards[0] if len(shards) == 1 else datasets.concatenate_datasets(shards)


def _split_cache(cache_file_name, split_name):
    if cache_file_name is None:
        return None
    stem, ext = os.path.splitext(str(cache_file_name))
    return f"{stem}-{split_name}{ext}"


# Tokens per sentence in collated labels: SONAR's decoder positions, the most tokens a target can hold. A width that
# is the same for every batch lets `Trainer.evaluate` / `Trainer.predict` join batches (they pad only the sentence
# axis); the loss drops the all-padding columns before the decoder runs, so the width costs no computation.
DEFAULT_LABEL_WIDTH = 512


class SonarLLMDataCollator:
    """Pads documents to (B, T, d) with `attention_mask`, and sentences to (B, T, L) labels padded with -100.

    `labels[:, 0]` is set to -100: the first sentence is never a target (position t-1 predicts sentence t), so
    `Trainer`'s `num_items_in_batch` (its count of labels != -100 over the whole accumulated batch, on all devices)
    equals the number of target tokens the model sums its loss over (see `SonarLLMForCausalSentenceModeling.forward`).

    Args:
        dtype: dtype of `sentence_embeddings` (a `torch.dtype` or its name, "bfloat16"); the model casts them to its
            own anyway, so this only saves memory and a copy.
        pad_to_multiple_of: round the sentence and token dimensions up to a multiple of this.
        duplicate_eos_id: append this id after every label row: the extra `</s>` target of
            `duplicate_final_eos_target`, written here so that `Trainer` counts it.
        one_label_per_sentence: keep only each sentence's first label, so that `Trainer` counts target sentences,
            not tokens. For `loss_type="mse"`, which scores sentences (the plain mean over predicted sentences):
            Trainer's count is then the model's, exact under accumulation and data parallelism.
        label_width: tokens per sentence in `labels` (L), the same for every batch so that `Trainer.evaluate` and
            `Trainer.predict` can join batches (the default, 512, is SONAR's decoder positions). A longer target is
            an error; None pads each batch to its own longest target (smaller, but those joins then fail).

    `SonarLLMDataCollator.for_model(model)` takes the dtype, the extra `</s>`, the one label per sentence and the
    label width (its decoder's positions) from the model.
    """

    def __init__(
        self,
        dtype: torch.dtype | str = torch.float32,
        pad_to_multiple_of: int | None = None,
        duplicate_eos_id: int | None = None,
        one_label_per_sentence: bool = False,
        label_width: int | None = DEFAULT_LABEL_WIDTH,
    ):
        if isinstance(dtype, str):
            name = dtype.removeprefix("torch.")
            dtype = getattr(torch, name, None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"Unknown dtype {name!r}; use e.g. torch.float32, 'bfloat16' or 'float16'.")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"`dtype` must be a floating-point torch dtype (embeddings), got {dtype!r}.")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"`pad_to_multiple_of` must be a positive integer, got {pad_to_multiple_of}.")
        self.dtype = dtype
        self.pad_to_multiple_of = pad_to_multiple_of
        self.duplicate_eos_id = duplicate_eos_id
        self.one_label_per_sentence = one_label_per_sentence
        if one_label_per_sentence and duplicate_eos_id is not None:
            raise ValueError("`one_label_per_sentence` (MSE) and `duplicate_eos_id` (a CE target) exclude each other.")
        if label_width is not None and (isinstance(label_width, bool) or not isinstance(label_width, int)
                                        or label_width < 1):  # fmt: skip
            raise ValueError(f"`label_width` must be a positive integer or None, got {label_width!r}.")
        self.label_width = 1 if one_label_per_sentence else label_width

    @classmethod
    def for_model(cls, model, pad_to_multiple_of: int | None = None) -> SonarLLMDataCollator:
        """The collator for `model` (a SONAR-LLM, or a PEFT model around one): its dtype, and the extra `</s>` label
        when its config sets `duplicate_final_eos_target`."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config
        mse_only = getattr(config, "loss_type", "ce") == "mse"
        duplicate = getattr(config, "duplicate_final_eos_target", False) and not mse_only
        eos = config.decoder_config.eos_token_id if duplicate else None
        width = config.decoder_config.max_position_embeddings  # a target fits the decoder's positions
        return cls(dtype=base.dtype, pad_to_multiple_of=pad_to_multiple_of, duplicate_eos_id=eos,
                   one_label_per_sentence=mse_only, label_width=width)  # fmt: skip

    def _round(self, size: int) -> int:
        step = self.pad_to_multiple_of
        return size if not step else -(-size // step) * step

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        lengths = [len(f["sentence_embeddings"]) for f in features]
        if min(lengths) == 0:
            raise ValueError(f"Example {lengths.index(0)} has no sentence.")
        dim = len(features[0]["sentence_embeddings"][0])
        width = self._round(max(lengths))
        extra = 1 if self.duplicate_eos_id is not None else 0
        longest = max(len(ids) for f in features for ids in f["labels"]) + extra
        tokens = self._round(longest) if self.label_width is None else self.label_width
        if longest > tokens and not self.one_label_per_sentence:
            raise ValueError(
                f"A sentence of this batch has {longest} target tokens"
                + (" (the extra `</s>` included)" if extra else "")
                + f", more than `label_width={self.label_width}`, the tokens per sentence of every batch. Keep "
                "targets shorter (`prepare_dataset(max_target_length=...)`) or pass a larger `label_width`."
            )
        embeddings = torch.zeros(len(features), width, dim, dtype=self.dtype)
        mask = torch.zeros(len(features), width, dtype=torch.long)
        labels = torch.full((len(features), width, tokens), -100, dtype=torch.long)
        for b, feature in enumerate(features):
            if len(feature["labels"]) != lengths[b]:
                raise ValueError(f"Example {b}: {lengths[b]} embeddings but {len(feature['labels'])} label rows.")
            rows = feature["sentence_embeddings"]  # lists, a numpy array or a tensor (any `datasets` format)
            if not torch.is_tensor(rows):
                rows = torch.from_numpy(np.asarray(rows, dtype=np.float32))
            if rows.shape[-1] != dim:
                raise ValueError(f"Example {b}: embeddings of width {rows.shape[-1]}, expected {dim}.")
            embeddings[b, : lengths[b]] = rows.to(self.dtype)
            mask[b, : lengths[b]] = 1
            for t, ids in enumerate(feature["labels"]):
                ids = ids[:1] if self.one_label_per_sentence else ids  # (B, T, 1): one item per target sentence
                labels[b, t, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
                if extra and len(ids):
                    labels[b, t, len(ids)] = self.duplicate_eos_id
        labels[:, 0] = -100
        return {"sentence_embeddings": embeddings, "attention_mask": mask, "labels": labels}


__all__ = ["prepare_dataset", "split_documents", "SonarLLMDataCollator", "DATA_FORMAT_VERSION", "DEFAULT_LABEL_WIDTH"]
