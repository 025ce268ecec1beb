"""`sonar-llm evaluate`: the paper's protocols on one model and one dataset, written as JSON, JSON lines and markdown.

    sonar-llm evaluate --model M --dataset D [--split S] [--prefix short|long|both] [--limit N] --out DIR
    python -m sonar_llm_hf.evaluation.evaluate ...          # the same, without the `sonar-llm` entry point

Tasks (`--tasks`, comma-separated; default `nlg,ce`): `nlg` (the continuation metrics, per prefix), `ce` (held-out
token cross-entropy), `judge` (full continuations of the 2-sentence prefix, exported as the GPT-4o judge's prompts;
graded when `--judge-url` names an OpenAI-compatible endpoint), `summarization` (`--text-column`/`--summary-column`).

`--dataset` is a folder saved with `datasets.save_to_disk`, a .jsonl/.json/.csv/.parquet file, a .txt file (one
document per paragraph, blank lines between), or a Hub dataset id (loaded with `datasets.load_dataset`: needs
network access). DIR receives `results.json`, `results.md` and one JSON-lines file of per-document records per task.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..cli_errors import run_command
from ..data_files import load_data_file
from .judge import JUDGE_MODEL, ChatClient, continuation_text, export_judge_prompts, grade_table, judge_stories
from .metrics import require_metrics
from .protocol import (
    PREFIXES,
    continue_documents,
    run_nlg,
    run_summarization,
    select_documents,
    token_cross_entropy,
    write_jsonl,
)

TASKS = ("nlg", "ce", "judge", "summarization")


def load_split(dataset: str, split: str | None = None, config: str | None = None):
    """A `datasets.Dataset` from a local folder/file or a Hub id; `split` picks one split of a `DatasetDict`."""
    import datasets

    path = Path(dataset)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
    elif path.is_file():
        loaded = load_data_file(path, text_sample_by="paragraph")
    else:
        if os.environ.get("HF_HUB_OFFLINE") in ("1", "true") or os.environ.get("HF_DATASETS_OFFLINE") in ("1", "true"):
            raise ValueError(f"{dataset!r} is not a local file or folder, and the Hub is off (HF_HUB_OFFLINE).")
        try:
            loaded = datasets.load_dataset(dataset, config)
        except Exception as error:  # noqa: BLE001 (network, unknown id: say what was tried)
            raise ValueError(f"{dataset!r} is not a local file or folder, and loading it from the Hub failed: "
                             f"{type(error).__name__}: {error}") from error  # fmt: skip
    if isinstance(loaded, datasets.DatasetDict):
        if split is None:
            if len(loaded) != 1:
                raise ValueError(f"{dataset} has splits {list(loaded)}: choose one with --split.")
            split = next(iter(loaded))
        if split not in loaded:
            raise ValueError(f"{dataset} has no split {split!r}; its splits are {list(loaded)} (--split).")
        return loaded[split]
    return loaded


def _column(table, name: str, what: str):
    if name not in table.column_names:
        raise ValueError(f"The dataset has no {what} column {name!r}; its columns are {table.column_names}.")
    return table[name]


def load_model(model, device: str | None = None, dtype: str = "float32"):
    """A model object as given, or `AutoModel.from_pretrained(path)` (the demo model when `None`), in eval mode."""
    import torch
    from transformers import AutoModel

    if model is None or isinstance(model, (str, os.PathLike)):
        from ..demo import default_model_path

        path = str(model) if model is not None else default_model_path(verbose=True)
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
        model = AutoModel.from_pretrained(path, dtype=torch_dtype)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return model.eval()


def run_evaluation(model, dataset, split: str | None = None, out: str | Path | None = None, tasks=("nlg", "ce"),
                   prefixes=("short",), limit: int | None = 512, skip_last: int = 0, max_document_sentences: int = 32,
                   text_column: str = "text", summary_column: str = "summary", dataset_config: str | None = None,
                   batch_size: int = 32, instruction: str | None = None, judge_url: str | None = None,
                   judge_model: str = JUDGE_MODEL, judge_api_key: str | None = None, progress_bar: bool = True,
                   device: str | None = None, **generate_kwargs) -> dict:  # fmt: skip
    """Run the protocols; returns the results dict (also written to `out`/results.json and results.md).

    `model`: a model object or a folder/Hub id. `dataset`: a `datasets.Dataset`, a list of texts, or what
    `load_split` accepts. `generate_kwargs` go to `model.generate` (e.g. `num_beams`).
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"Unknown task(s) {sorted(unknown)}; choose from {', '.join(TASKS)}.")
    bad = set(prefixes) - set(PREFIXES)
    if bad:
        raise ValueError(f"Unknown prefix(es) {sorted(bad)}; choose from {', '.join(PREFIXES)}.")
    if set(tasks) & {"nlg", "summarization"}:
        require_metrics()  # before any generation: the eval extra and WordNet
    out = Path(out) if out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise ValueError(f"The output folder {out} is a file.")
    name = dataset if isinstance(dataset, (str, os.PathLike)) else type(dataset).__name__
    table = load_split(str(dataset), split, dataset_config) if isinstance(dataset, (str, os.PathLike)) else dataset
    named = isinstance(model, (str, os.PathLike)) or model is None
    model_name = model if named else getattr(model, "name_or_path", "")
    model = load_model(model, device)
    created = _make_folder(out) if out is not None else []
    try:
        return _evaluate(model, table, name, model_name, split, out, tasks, prefixes, limit, skip_last,
                         max_document_sentences, text_column, summary_column, batch_size, instruction, judge_url,
                         judge_model, judge_api_key, progress_bar, generate_kwargs)  # fmt: skip
    except BaseException:
        for folder in reversed(created):  # a failed run leaves no empty folder behind (records it wrote stay)
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _make_folder(folder: Path) -> list[Path]:
    """`mkdir -p folder`; returns the folders it created, outermost first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _evaluate(model, table, name, model_name, split, out, tasks, prefixes, limit, skip_last, max_document_sentences,
              text_column, summary_column, batch_size, instruction, judge_url, judge_model, judge_api_key,
              progress_bar, generate_kwargs) -> dict:  # fmt: skip
    lang = model.config.default_lang
    settings = {"limit": limit, "skip_last": skip_last, "batch_size": batch_size,
                "max_document_sentences": max_document_sentences, "generate": generate_kwargs}  # fmt: skip
    results: dict = {"model": str(model_name or ""), "dataset": str(name), "split": split, "tasks": list(tasks),
                     "settings": settings}  # fmt: skip
    started = time.time()
    texts = table if isinstance(table, list) else None
    if set(tasks) & {"nlg", "ce", "judge"}:
        texts = texts if texts is not None else _column(table, text_column, "text")
        documents, counts = select_documents(texts, limit, skip_last, max_document_sentences, lang)
        results["documents"] = counts
        for prefix in prefixes if "nlg" in tasks else ():
            path = out / f"nlg_{prefix}.jsonl" if out is not None else None
            summary, _ = run_nlg(model, documents, prefix, batch_size, progress_bar, path, **generate_kwargs)
            results.setdefault("nlg", {})[prefix] = summary
        if "ce" in tasks:
            results["token_ce"] = token_cross_entropy(model, [" ".join(d) for d in documents],
                                                      batch_size=max(1, batch_size // 4),
                                                      progress_bar=progress_bar)  # fmt: skip
        if "judge" in tasks:
            results["judge"] = _judge(model, documents, out, batch_size, progress_bar, judge_url, judge_model,
                                      judge_api_key, generate_kwargs)  # fmt: skip
    if "summarization" in tasks:
        if isinstance(table, list):
            raise ValueError("Summarization needs a dataset with text and summary columns, not a list of texts.")
        rows = table.select(range(min(limit, len(table)))) if limit is not None else table
        path = out / "summarization.jsonl" if out is not None else None
        results["summarization"], _ = run_summarization(
            model, list(_column(rows, text_column, "text")), list(_column(rows, summary_column, "summary")),
            batch_size=max(1, batch_size // 4), instruction=instruction, progress_bar=progress_bar,
            records_path=path, **generate_kwargs,
        )  # fmt: skip
    results["seconds"] = round(time.time() - started, 1)
    if out is not None:
        (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        (out / "results.md").write_text(results_markdown(results))
    return results


def _judge(model, documents, out, batch_size, progress_bar, url, judge_model, api_key, generate_kwargs) -> dict:
    """Full continuations of the 2-sentence prefix (the paper's judge prompt), exported; graded if `url` is set."""
    prompts = [doc[:2] for doc in documents]
    generated = continue_documents(model, prompts, max_new_sentences=None, batch_size=batch_size,
                                   progress_bar=progress_bar, desc="Stories for the judge",
                                   **generate_kwargs)  # fmt: skip
    stories = [(" ".join(p), continuation_text(g)) for p, g in zip(prompts, generated)]
    summary: dict = {"stories": len(stories)}
    if out is not None:
        summary["prompts"] = str(export_judge_prompts(stories, out / "judge_prompts.jsonl", model=judge_model))
    if url:
        graded = judge_stories(stories, ChatClient(url, api_key=api_key, model=judge_model), progress_bar)
        if out is not None:
            write_jsonl(out / "judge_results.jsonl", graded)
        summary["grades"] = grade_table(graded)
    return summary


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def results_markdown(results: dict) -> str:
    """The results as markdown tables (metrics x 100, as in the paper)."""
    lines = [f"# Evaluation of `{results['model']}` on `{results['dataset']}`" + (f" ({results['split']})" if
             results.get("split") else ""), ""]  # fmt: skip
    if "nlg" in results:
        lines += ["| prefix | documents | BLEU | ROUGE-L | METEOR | no reference | empty generation |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for prefix, s in results["nlg"].items():
            lines.append(f"| {prefix} | {s['count']} | {_fmt(s['bleu'])} | {_fmt(s['rouge_l'])} | "
                         f"{_fmt(s['meteor'])} | {s['no_reference']} | {s['empty_generation']} |")  # fmt: skip
        lines.append("")
    if "token_ce" in results:
        ce = results["token_ce"]
        lines += [f"Held-out token cross-entropy: **{ce['token_ce']:.4f}** ({ce['num_target_tokens']} target tokens, "
                  f"{ce['num_documents']} documents).", ""]  # fmt: skip
    if "summarization" in results:
        s = results["summarization"]
        lines += ["| summarization | examples | ROUGE-L | METEOR | truncated documents |", "|---|---|---|---|---|",
                  f"| | {s['count']} | {_fmt(s['rouge_l'])} | {_fmt(s['meteor'])} | {s['truncated_documents']} |",
                  ""]  # fmt: skip
    if "judge" in results and "grades" in results["judge"]:
        grades = results["judge"]["grades"]
        lines += ["| judge | " + " | ".join(c.capitalize() for c in grades) + " |", "|---" * (len(grades) + 1) + "|",
                  "| mean (n) | " + " | ".join(f"{_fmt(g['mean'])} ({g['n']}/{g['total']})" for g in grades.values())
                  + " |", ""]  # fmt: skip
    elif "judge" in results:
        lines += [f"Judge prompts for {results['judge']['stories']} stories: `judge_prompts.jsonl` (not graded: "
                  "no --judge-url).", ""]  # fmt: skip
    return "\n".join(lines)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `sonar-llm evaluate` (call on the subcommand's parser; `run_evaluate` runs it)."""
    parser.add_argument("--model", default=None, help="converted model folder or Hub repo (default: the demo model)")
    parser.add_argument("--dataset", required=True,
                        help="save_to_disk folder, .jsonl/.json/.csv/.parquet/.txt, or Hub id")  # fmt: skip
    parser.add_argument("--dataset-config", default=None, help="Hub dataset configuration")
    parser.add_argument("--split", default=None, help="split of a dataset with several (e.g. validation)")
    parser.add_argument("--out", required=True, help="output folder (results.json, results.md, records)")
    parser.add_argument("--tasks", default="nlg,ce", help=f"comma-separated, of {', '.join(TASKS)} (default nlg,ce)")
    parser.add_argument(
        "--prefix",
        choices=["short", "long", "both"],
        default="short",
        help="NLG prefix: 2 sentences (short), half the document (long), or both",
    )
    parser.add_argument("--limit", type=int, default=512, help="documents evaluated (the paper: 512)")
    parser.add_argument(
        "--skip-last",
        type=int,
        default=0,
        help="drop the last N documents first (the paper: 2500 of TinyStories validation)",
    )
    parser.add_argument("--max-document-sentences", type=int, default=32, help="longer documents are left out")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--summary-column", default="summary")
    parser.add_argument("--instruction", default=None, help="sentence appended to summarization prompts")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per generate call")
    parser.add_argument("--num-beams", type=int, default=None, help="SONAR decoder beam size (default 5)")
    parser.add_argument("--judge-url", default=None, help="OpenAI-compatible base URL, e.g. https://api.openai.com/v1")
    parser.add_argument("--judge-model", default=JUDGE_MODEL)
    parser.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the key")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    prefixes = PREFIXES if args.prefix == "both" else (args.prefix,)
    generate = {"num_beams": args.num_beams} if args.num_beams is not None else {}
    results = run_evaluation(
        args.model, args.dataset, split=args.split, out=args.out, tasks=tasks, prefixes=prefixes, limit=args.limit,
        skip_last=args.skip_last, max_document_sentences=args.max_document_sentences, text_column=args.text_column,
        summary_column=args.summary_column, dataset_config=args.dataset_config, batch_size=args.batch_size,
        instruction=args.instruction, judge_url=args.judge_url, judge_model=args.judge_model,
        judge_api_key=os.environ.get(args.judge_api_key_env), progress_bar=not args.no_progress, device=args.device,
        **generate,
    )  # fmt: skip
    print(results_markdown(results))
    print(f"written to {args.out}/results.json and results.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sonar-llm evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser = add_evaluate_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(run_evaluate, args, prog="sonar-llm evaluate")


if __name__ == "__main__":
    sys.exit(main())
