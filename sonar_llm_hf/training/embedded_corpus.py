"""Training examples straight from `sonar-llm embed` shards (LCM's layout): no re-embedding.

    corpus = load_embedded_corpus("corpus/")                  # datasets parquet; streaming=True for large sets
    examples = prepare_embedded_dataset(corpus, model)        # sentence_embeddings + labels, as prepare_dataset

A shard row holds a document's `text_sentences` and their `text_sentences_sonar_emb`. Each becomes one example as in
`prepare_dataset`: the first `max_sentences` sentences, the end sentence appended (and the begin sentence prepended
when the model uses it; those two are embedded once per language with the model's encoder), the SONAR decoder targets
`[lang] pieces </s>` tokenized. The shards' `_embed_config.json` is checked first: every shard present, embeddings
as wide as the model's, made by the same encoder weights (else the model would learn from another SONAR's space).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..embedding.shards import EMBEDDINGS, SENTENCES, encoder_fingerprint
from ..models.tokenization_sonar import check_language, encode_target
from .data import DEFAULT_BEGIN_SENTENCE, DEFAULT_EOS_SENTENCE, _digest, _encoder_fingerprint, _tokenizer_fingerprint

logger = logging.getLogger(__name__)


def embedded_corpus_settings(path) -> dict:
    """The settings of `sonar-llm embed` that made the shards in `path` (its `_embed_config.json`)."""
    config = Path(path) / "_embed_config.json"
    if not config.exists():
        raise ValueError(f"{path} has no _embed_config.json: it is not a `sonar-llm embed` output folder.")
    return json.loads(config.read_text())


def load_embedded_corpus(path, streaming: bool = False):
    """The shards in `path` as one `datasets` split (in document order), after checking that none is missing."""
    import datasets

    settings = embedded_corpus_settings(path)
    expected = -(-settings["documents"] // settings["shard_rows"])
    files = sorted(Path(path).glob("shard_*.parquet"))
    missing = sorted(set(range(expected)) - {int(f.stem.split("_")[1]) for f in files})
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} of {expected} shards (e.g. shard {missing[0]}): the embed run "
                         "is unfinished; rerun the same `sonar-llm embed` command to complete it.")  # fmt: skip
    return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", streaming=streaming)


def prepare_embedded_dataset(
    corpus,
    model,
    tokenizer=None,
    corpus_path=None,
    lang_column: str | None = None,
    default_lang: str | None = None,
    max_sentences: int = 32,
    add_eos: bool = True,
    add_begin: bool | None = None,
    max_target_length: int = 256,
    check_encoder: bool = True,
):
    """Shard rows -> `sentence_embeddings` (T x d float32) and `labels`, the columns `SonarLLMDataCollator` batches.

    `corpus` is what `load_embedded_corpus` returns (a `Dataset` or, streaming, an `IterableDataset`). With
    `corpus_path`, the shards' settings are checked against `model` (width; encoder weights unless `check_encoder`
    is False, e.g. for shards embedded in bfloat16). Documents left with fewer than 2 entries are skipped; for a
    `Dataset` their number is printed.
    """
    import datasets

    encoder = getattr(model, "sonar_encoder", model)
    config = getattr(model, "config", None) if encoder is not model else None
    tokenizer = tokenizer or getattr(model, "tokenizer", None) or getattr(encoder, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("The model has no SONAR tokenizer; pass `tokenizer=`.")
    dim = encoder.config.d_model
    if corpus_path is not None:
        settings = embedded_corpus_settings(corpus_path)
        if settings["dim"] != dim:
            raise ValueError(f"{corpus_path} holds {settings['dim']}-d embeddings; this model's SONAR is {dim}-d.")
        if check_encoder and settings["encoder_fingerprint"] != encoder_fingerprint(encoder):
            raise ValueError(f"{corpus_path} was embedded by another SONAR encoder ({settings['model']}) than this "
                             "model's: its embeddings live in another space. Re-embed with this model's encoder, or "
                             "pass check_encoder=False if it is the same encoder in another dtype.")  # fmt: skip
        lang_column = lang_column or settings.get("lang_column")
        default_lang = default_lang or settings.get("lang")
    for column in (SENTENCES, EMBEDDINGS):
        if corpus.column_names is not None and column not in corpus.column_names:
            raise ValueError(f"The corpus has no column {column!r} ({corpus.column_names}): embed it with "
                             "`sonar-llm embed` first.")  # fmt: skip
    default_lang = check_language(default_lang or getattr(config, "default_lang", "eng_Latn"))
    add_begin = getattr(config, "add_begin", False) if add_begin is None else add_begin
    extra_before = [getattr(config, "begin_sentence", DEFAULT_BEGIN_SENTENCE)] if add_begin else []
    extra_after = [getattr(config, "eos_sentence", DEFAULT_EOS_SENTENCE)] if add_eos else []
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def fixed(lang: str) -> tuple[np.ndarray, np.ndarray]:
        """The begin/end sentences' embeddings in `lang`, computed once."""
        if lang not in cache:
            texts = extra_before + extra_after
            rows = encoder.encode(texts, lang=lang, tokenizer=tokenizer).float().cpu().numpy() if texts else None
            empty = np.zeros((0, dim), dtype=np.float32)
            cache[lang] = (rows[: len(extra_before)] if extra_before else empty,
                           rows[len(extra_before):] if extra_after else empty)  # fmt: skip
        return cache[lang]

    def convert(batch):
        out = {"sentence_embeddings": [], "labels": [], "num_sentences": [], "sentences": [], "lang": []}
        langs = batch[lang_column] if lang_column else [None] * len(batch[SENTENCES])
        for sentences, rows, lang in zip(batch[SENTENCES], batch[EMBEDDINGS], langs):
            lang = check_language(lang or default_lang)
            sentences = extra_before + list(sentences[:max_sentences]) + extra_after
            before, after = fixed(lang)
            kept = np.asarray(rows[:max_sentences], dtype=np.float32).reshape(-1, dim)
            embeddings = np.concatenate([before, kept, after])
            out["sentence_embeddings"].append(embeddings)
            out["labels"].append(encode_target(tokenizer, sentences, lang, max_length=max_target_length)
                                 if len(sentences) >= 2 else [])  # fmt: skip
            out["num_sentences"].append(len(sentences))
            out["sentences"].append(sentences)
            out["lang"].append(lang)
        return out

    features = datasets.Features({
        "sentence_embeddings": datasets.List(datasets.List(datasets.Value("float32"))),
        "labels": datasets.List(datasets.List(datasets.Value("int32"))),
        "num_sentences": datasets.Value("int32"),
        "sentences": datasets.List(datasets.Value("string")),
        "lang": datasets.Value("string"),
    })  # fmt: skip
    options = {}
    if isinstance(corpus, datasets.Dataset):  # an explicit fingerprint: hashing `convert` would pickle the encoder
        settings = [max_sentences, extra_before, extra_after, max_target_length, lang_column, default_lang]
        options["new_fingerprint"] = _digest(corpus._fingerprint, "embedded", _encoder_fingerprint(encoder),
                                             _tokenizer_fingerprint(tokenizer), settings)  # fmt: skip
    with torch.no_grad():
        examples = corpus.map(convert, batched=True, remove_columns=corpus.column_names, features=features, **options)
    keep = examples.filter(lambda n: n >= 2, input_columns="num_sentences")
    if isinstance(examples, datasets.Dataset) and len(keep) < len(examples):
        message = f"skipped {len(examples) - len(keep)} of {len(examples)} documents with fewer than 2 entries"
        print(f"sonar_llm_hf.data: {message}")
        logger.warning(message)
    return keep


__all__ = ["embedded_corpus_settings", "load_embedded_corpus", "prepare_embedded_dataset"]
