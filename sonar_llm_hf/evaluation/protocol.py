"""The paper's evaluation protocols on a SONAR-LLM: NLG continuation, summarization and held-out token cross-entropy.

NLG (the reference's `generate.py` + `evaluate_nlg.py`): each document is split into sentences; the prefix is its
first 2 sentences ("short") or the first half, at least one ("long"); the model continues it by one sentence
(batched `generate(..., max_new_sentences=1)`); the first sentence of that continuation is scored against the
document's first sentence after the prefix with `nlg_scores` (BLEU, ROUGE-L, METEOR, x 100). Documents are the
first `limit` (512) non-empty documents of at most 32 sentences, optionally after dropping the last `skip_last` (the
paper: TinyStories validation minus its last 2,500). A document with no sentence after its prefix is scored against
an empty reference, as in the reference scripts (it scores 0), and counted in the summary.

Sentences are split with the package's offline splitter (sentencex), where the reference uses NLTK's punkt (a
download).

Summarization: the prompt is the document's sentences (then an optional instruction sentence); the model generates
as many sentences as the reference summary has; ROUGE-L and METEOR against the summary.

Token cross-entropy: the model's own forward loss (`loss_type="ce"`, whatever it was trained with) over collated
batches of held-out documents, averaged over all target tokens (the paper's validation loss).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from .metrics import METRICS, nlg_scores

logger = logging.getLogger(__name__)

PREFIXES = ("short", "long")


def _split(text: str, lang: str) -> list[str]:
    from .. import split_sentences

    return split_sentences(text, lang)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc)


def prefix_length(num_sentences: int, prefix: str) -> int:
    """Sentences in the prompt: 2 ("short") or half the document, at least 1 ("long"), as the reference."""
    if prefix == "short":
        return 2
    if prefix == "long":
        return max(1, num_sentences // 2)
    raise ValueError(f"`prefix` must be 'short' or 'long', got {prefix!r}.")


def select_documents(texts, limit: int | None = 512, skip_last: int = 0, max_sentences: int = 32,
                     lang: str = "eng_Latn") -> tuple[list[list[str]], dict]:  # fmt: skip
    """The protocol's documents, split into sentences, with counts of what was left out and why.

    Keeps non-empty documents of at most `max_sentences` sentences (the reference's filter), after dropping the last
    `skip_last` documents, and returns the first `limit` of them.
    """
    texts = list(texts)
    if skip_last:
        texts = texts[:-skip_last] if skip_last < len(texts) else []
    counts = {"considered": 0, "not_text": 0, "empty": 0, "too_long": 0}
    kept: list[list[str]] = []
    for text in texts:
        if limit is not None and len(kept) >= limit:
            break
        counts["considered"] += 1
        if not isinstance(text, str):
            counts["not_text"] += 1
            continue
        sentences = _split(text, lang) if text.strip() else []
        if not sentences:
            counts["empty"] += 1
        elif max_sentences and len(sentences) > max_sentences:
            counts["too_long"] += 1
        else:
            kept.append(sentences)
    counts["kept"] = len(kept)
    skipped = {k: v for k, v in counts.items() if k in ("not_text", "empty", "too_long") and v}
    if skipped:
        message = f"kept {len(kept)} of {counts['considered']} documents; left out " + ", ".join(
            f"{n} {reason.replace('_', ' ')}" + (f" (> {max_sentences} sentences)" if reason == "too_long" else "")
            for reason, n in skipped.items()
        )
        print(f"sonar_llm_hf.evaluation: {message}")
        logger.info(message)
    if not kept:
        raise ValueError(f"No document to evaluate: {counts}.")
    if limit is not None and len(kept) < limit:
        logger.warning(f"Only {len(kept)} documents for the protocol (asked for {limit}).")
    return kept, counts


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def continue_documents(
    model,
    prompts: list[list[str]],
    max_new_sentences: int | None = 1,
    batch_size: int = 32,
    progress_bar: bool = True,
    desc: str = "Generating",
    **generate_kwargs,
) -> list[list[str]]:
    """Batched `model.generate` on sentence-list prompts; the generated sentences of each prompt."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
    out: list[list[str]] = []
    options = dict(generate_kwargs)
    if max_new_sentences is not None:
        options["max_new_sentences"] = max_new_sentences
    batches = list(_batches(prompts, batch_size))
    for batch in _progress(batches, len(batches), desc, progress_bar):
        result = model.generate(batch, **options)
        out.extend(list(s) for s in result.sentences)
    return out


def first_sentence(text: str, lang: str = "eng_Latn") -> str:
    """The first sentence of a text ("" for an empty one), as the reference's `sent_tokenize(...)[0]`."""
    sentences = _split(text, lang) if text.strip() else []
    return sentences[0] if sentences else ""


def run_nlg(model, documents: list[list[str]], prefix: str = "short", batch_size: int = 32,
            progress_bar: bool = True, records_path: str | Path | None = None, lang: str | None = None,
            **generate_kwargs) -> tuple[dict, list[dict]]:  # fmt: skip
    """The NLG protocol on documents given as sentence lists (see `select_documents`).

    Returns `(summary, records)`: the summary holds `bleu`, `rouge_l`, `meteor` (x 100), `count`,
    `no_reference` (documents with no sentence after the prefix) and `empty_generation` (the model ended the
    document at once); one record per document: `index`, `prefix`, `generation` (the first generated sentence),
    `reference`, `scores` (in [0, 1]). With `records_path` the records are written as JSON lines.
    """
    lang = lang or getattr(getattr(model, "config", None), "default_lang", "eng_Latn")
    lengths = [prefix_length(len(doc), prefix) for doc in documents]
    prompts = [doc[:n] for doc, n in zip(documents, lengths)]
    references = [doc[n] if n < len(doc) else "" for doc, n in zip(documents, lengths)]
    generated = continue_documents(
        model,
        prompts,
        max_new_sentences=1,
        batch_size=batch_size,
        progress_bar=progress_bar,
        desc=f"NLG ({prefix} prefix)",
        **generate_kwargs,
    )
    predictions = [first_sentence(" ".join(sentences), lang) for sentences in generated]
    scores = nlg_scores(predictions, references, return_pairs=True)
    records = [
        {"index": i, "prefix": " ".join(p), "generation": g, "reference": r, "scores": s}
        for i, (p, g, r, s) in enumerate(zip(prompts, predictions, references, scores.pop("pairs")))
    ]
    summary = {
        **scores,
        "prefix": prefix,
        "no_reference": references.count(""),
        "empty_generation": predictions.count(""),
    }
    if summary["no_reference"]:
        logger.warning(
            f"{summary['no_reference']} of {len(documents)} documents have no sentence after the "
            f"{prefix} prefix: scored against an empty reference (0), as in the reference scripts."
        )
    if records_path is not None:
        write_jsonl(records_path, records)
    return summary, records


def run_summarization(model, documents, summaries, batch_size: int = 8, instruction: str | None = None,
                      max_prompt_sentences: int | None = None, progress_bar: bool = True,
                      records_path: str | Path | None = None, lang: str | None = None,
                      **generate_kwargs) -> tuple[dict, list[dict]]:  # fmt: skip
    """Summarization: generate as many sentences as each reference summary has; ROUGE-L and METEOR (x 100).

    `documents`/`summaries` are texts. `instruction` (e.g. "Text summarization in one sentence only.") is appended
    to each prompt as a sentence. Prompts keep the first `max_prompt_sentences` document sentences (default: as many
    as fit the model's `max_sentences` with the summary); the number truncated is reported.
    """
    if len(documents) != len(summaries):
        raise ValueError(f"{len(documents)} documents but {len(summaries)} summaries.")
    lang = lang or getattr(getattr(model, "config", None), "default_lang", "eng_Latn")
    limit = int(model.generation_config.to_dict().get("max_sentences", 32) or 32)
    items, truncated = [], 0
    for i, (document, summary) in enumerate(zip(documents, summaries)):
        for name, text in (("document", document), ("summary", summary)):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Example {i}: the {name} is empty or not text.")
        target = _split(summary, lang)
        keep = max_prompt_sentences or max(1, limit - len(target) - (1 if instruction else 0))
        sentences = _split(document, lang)
        truncated += len(sentences) > keep
        prompt = sentences[:keep] + ([instruction] if instruction else [])
        items.append((i, prompt, len(target), summary))
    if truncated:
        logger.warning(f"{truncated} of {len(items)} documents were cut to their first sentences to fit the prompt.")
    predictions: dict[int, str] = {}
    groups: dict[int, list] = {}
    for item in items:
        groups.setdefault(item[2], []).append(item)
    total = sum(math.ceil(len(g) / batch_size) for g in groups.values())
    bar = _progress(None, total, "Summarization", progress_bar) if progress_bar else None
    for count, group in sorted(groups.items()):
        for batch in _batches(group, batch_size):
            prompts = [prompt for _, prompt, _, _ in batch]
            options = dict(generate_kwargs, max_new_sentences=count)
            options["max_sentences"] = max(len(p) for p in prompts) + count
            result = model.generate(prompts, **options)
            for (i, *_), sentences in zip(batch, result.sentences):
                predictions[i] = " ".join(sentences[:count])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    ordered = [predictions[i] for i, *_ in items]
    references = [summary for *_, summary in items]
    scores = nlg_scores(ordered, references, metrics=("rouge_l", "meteor"), return_pairs=True)
    records = [
        {"index": i, "prompt": " ".join(prompt), "generation": g, "reference": r, "scores": s}
        for (i, prompt, _, r), g, s in zip(items, ordered, scores.pop("pairs"))
    ]
    summary = {**scores, "truncated_documents": truncated}
    if records_path is not None:
        write_jsonl(records_path, records)
    return summary, records


def token_cross_entropy(model, texts, batch_size: int = 8, progress_bar: bool = True, **prepare_kwargs) -> dict:
    """The paper's validation loss: mean token cross-entropy through the frozen SONAR decoder on held-out texts.

    Documents are prepared as for training (`prepare_dataset`: split, first 32 sentences + the end sentence, SONAR
    embeddings, target ids) and batched with `SonarLLMDataCollator`; the loss is the model's forward with
    `loss_type="ce"`, averaged over all target tokens of all batches. Returns `{"token_ce", "num_target_tokens",
    "num_documents"}`.
    """
    import datasets
    import torch

    from ..training.data import SonarLLMDataCollator, prepare_dataset

    texts = list(texts)
    raw = datasets.Dataset.from_dict({"text": texts})
    data_logger = logging.getLogger(prepare_dataset.__module__)
    level = data_logger.level
    data_logger.setLevel(logging.ERROR)  # its "not cached" warning: evaluation embeds once, on purpose
    try:
        prepared = prepare_dataset(raw, model, progress_bar=progress_bar, **prepare_kwargs)
    finally:
        data_logger.setLevel(level)
    collator = SonarLLMDataCollator()
    saved_loss_type, was_training = model.config.loss_type, model.training
    model.config.loss_type = "ce"
    model.eval()
    total, tokens = 0.0, 0
    try:
        rows = list(range(len(prepared)))
        batches = list(_batches(rows, batch_size))
        with torch.no_grad():
            for batch in _progress(batches, len(batches), "Token cross-entropy", progress_bar):
                inputs = collator([prepared[i] for i in batch])
                inputs = {k: v.to(model.device) for k, v in inputs.items()}
                inputs["sentence_embeddings"] = inputs["sentence_embeddings"].to(model.dtype)
                out = model(**inputs)
                count = int(out.num_target_tokens)
                total += float(out.loss) * count
                tokens += count
    finally:
        model.config.loss_type = saved_loss_type
        model.train(was_training)
    if tokens == 0:
        raise ValueError("The held-out documents hold no target token (each needs at least 2 sentences).")
    return {"token_ce": total / tokens, "num_target_tokens": tokens, "num_documents": len(prepared)}


def write_jsonl(path: str | Path, records: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


__all__ = [
    "METRICS",
    "PREFIXES",
    "continue_documents",
    "first_sentence",
    "prefix_length",
    "run_nlg",
    "run_summarization",
    "select_documents",
    "token_cross_entropy",
    "write_jsonl",
]
