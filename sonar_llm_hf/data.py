"""From a `datasets.Dataset` of documents to SONAR-LLM training examples, and the collator that batches them.

    examples = prepare_dataset(raw, model, text_column="text")   # sentences, SONAR embeddings, target ids
    trainer = Trainer(model, args, train_dataset=examples, data_collator=SonarLLMDataCollator())

Each example holds `sentence_embeddings` (T lists of d floats) and `labels` (T lists of target ids `[lang] pieces
</s>`): the names of `forward`'s arguments, so `Trainer`'s default `remove_unused_columns=True` keeps them. The
embedding pass is cached by `datasets` in shards: a rerun reuses it and an interrupted run resumes at the first
unfinished shard.
"""

from __future__ import annotations

import hashlib
import json
import logging

import torch

from .splitting_sonar_llm import split_sentences
from .tokenization_sonar import check_language, encode_target

logger = logging.getLogger(__name__)


def _model_fingerprint(model) -> str:
    """Identifies the SONAR encoder and the settings: cheap (a few statistics per tensor), deterministic."""
    digest = hashlib.sha256(json.dumps(model.sonar_encoder.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in model.sonar_encoder.state_dict().items():
        flat = tensor.detach().float().flatten()
        stats = torch.stack([flat.sum(), flat.abs().sum(), flat[: min(16, flat.numel())].sum()]).tolist()
        digest.update(f"{name}{tuple(tensor.shape)}{stats}".encode())
    return digest.hexdigest()[:16]


def split_documents(
    dataset,
    text_column: str = "text",
    lang_column: str | None = None,
    default_lang: str = "eng_Latn",
    max_sentences: int = 32,
    eos_sentence: str | None = "End of sequence.",
    begin_sentence: str | None = None,
):
    """Documents -> `sentences` (+ `lang`): offline splitting, the first `max_sentences`, the end (and begin)
    sentence. Rows that are not text raise; documents with no sentence cannot train and are dropped with a count."""
    if text_column not in dataset.column_names:
        raise ValueError(f"The dataset has no column {text_column!r}; its columns are {dataset.column_names}.")
    check_language(default_lang)

    def split(batch, indices):
        out = {"sentences": [], "lang": [], "keep": []}
        langs = batch[lang_column] if lang_column else [default_lang] * len(batch[text_column])
        for index, text, lang in zip(indices, batch[text_column], langs):
            if not isinstance(text, str):
                raise TypeError(f"Row {index}: column {text_column!r} holds {type(text).__name__}, not text.")
            lang = check_language(lang or default_lang)
            sentences = split_sentences(text, lang)[:max_sentences]
            out["keep"].append(len(sentences) > 0)
            if begin_sentence:
                sentences = [begin_sentence, *sentences]
            if eos_sentence:
                sentences = [*sentences, eos_sentence]
            out["sentences"].append(sentences)
            out["lang"].append(lang)
        return out

    split_set = dataset.map(split, batched=True, with_indices=True, desc="Splitting sentences")
    kept = split_set.filter(lambda keep: keep, input_columns="keep")
    dropped = len(split_set) - len(kept)
    if dropped:
        logger.warning(f"Dropped {dropped} of {len(split_set)} documents with no sentence (empty or whitespace).")
        print(f"sonar_llm_hf.data: dropped {dropped} of {len(split_set)} empty documents")
    if len(kept) == 0:
        raise ValueError("No document holds a sentence: nothing to train on.")
    return kept.remove_columns("keep")


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
    batch_size: int = 64,
    max_target_length: int = 256,
    shard_size: int = 1000,
    progress_bar: bool = True,
):
    """Split, embed with the model's frozen SONAR encoder (length-sorted batches), and tokenize targets."""
    import datasets

    config = model.config
    tokenizer = tokenizer or model.tokenizer
    if tokenizer is None:
        raise ValueError("The model has no SONAR tokenizer; pass `tokenizer=`.")
    add_begin = config.add_begin if add_begin is None else add_begin
    split_set = split_documents(
        dataset, text_column, lang_column, default_lang or config.default_lang, max_sentences,
        config.eos_sentence if add_eos else None, config.begin_sentence if add_begin else None,
    )  # fmt: skip
    encoder = model.sonar_encoder

    def embed(batch):
        flat, langs, owners = [], [], []
        for row, (sentences, lang) in enumerate(zip(batch["sentences"], batch["lang"])):
            flat.extend(sentences)
            langs.extend([lang] * len(sentences))
            owners.extend([row] * len(sentences))
        embeddings = torch.empty(len(flat), config.embed_dim)
        for lang in set(langs):
            rows = [i for i, l in enumerate(langs) if l == lang]
            embeddings[rows] = encoder.encode([flat[i] for i in rows], lang=lang, batch_size=batch_size,
                                              progress_bar=False).float().cpu()  # fmt: skip
        labels = [encode_target(tokenizer, [s], l, max_length=max_target_length)[0] for s, l in zip(flat, langs)]
        out = {"sentence_embeddings": [[] for _ in batch["sentences"]], "labels": [[] for _ in batch["sentences"]]}
        for i, owner in enumerate(owners):
            out["sentence_embeddings"][owner].append(embeddings[i].tolist())
            out["labels"][owner].append(labels[i])
        out["num_sentences"] = [len(s) for s in batch["sentences"]]
        return out

    settings = json.dumps([_model_fingerprint(model), max_target_length, batch_size], sort_keys=True)
    shards = []
    num_shards = max(1, -(-len(split_set) // shard_size))
    for index in range(num_shards):
        shard = split_set.shard(num_shards, index, contiguous=True)
        fingerprint = hashlib.sha256(f"{shard._fingerprint}{settings}".encode()).hexdigest()[:16]
        shards.append(
            shard.map(embed, batched=True, batch_size=batch_size, new_fingerprint=fingerprint,
                      desc=f"SONAR embeddings {index + 1}/{num_shards}" if progress_bar else None)  # fmt: skip
        )
    return datasets.concatenate_datasets(shards)


class SonarLLMDataCollator:
    """Pads documents to (B, T, d) with `attention_mask`, and sentences to (B, T, L) labels padded with -100.

    `labels[:, 0]` is set to -100: the first sentence is never a target (position t-1 predicts sentence t), so
    `Trainer`'s `num_items_in_batch` then counts exactly the target tokens.
    """

    def __init__(self, dtype: torch.dtype = torch.float32):
        self.dtype = dtype

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        lengths = [len(f["sentence_embeddings"]) for f in features]
        dim = len(features[0]["sentence_embeddings"][0])
        width = max(lengths)
        tokens = max(len(ids) for f in features for ids in f["labels"])
        embeddings = torch.zeros(len(features), width, dim, dtype=self.dtype)
        mask = torch.zeros(len(features), width, dtype=torch.long)
        labels = torch.full((len(features), width, tokens), -100, dtype=torch.long)
        for b, feature in enumerate(features):
            if len(feature["labels"]) != lengths[b]:
                raise ValueError(f"Example {b}: {lengths[b]} embeddings but {len(feature['labels'])} label rows.")
            embeddings[b, : lengths[b]] = torch.as_tensor(feature["sentence_embeddings"], dtype=self.dtype)
            mask[b, : lengths[b]] = 1
            for t, ids in enumerate(feature["labels"]):
                labels[b, t, : len(ids)] = torch.as_tensor(ids)
        labels[:, 0] = -100
        return {"sentence_embeddings": embeddings, "attention_mask": mask, "labels": labels}


__all__ = ["prepare_dataset", "split_documents", "SonarLLMDataCollator"]
