"""The paper's NLG metrics, exactly as the reference's `evaluate_nlg.py` defines them.

    nlg_scores(predictions, references)  # {"bleu": ..., "rouge_l": ..., "meteor": ..., "count": n}, means x 100

- BLEU: nltk `sentence_bleu([reference.split()], prediction.split(), smoothing_function=SmoothingFunction().method4)`;
- ROUGE-L: rouge-score `RougeScorer(["rougeL"], use_stemmer=True).score(reference, prediction)["rougeL"].fmeasure`;
- METEOR: nltk `meteor_score([reference.split()], prediction.split())`, with WordNet synonyms (see `wordnet.py`).

Why restate three library calls: the numbers depend on details (whitespace tokens, smoothing method 4, the stemmer,
WordNet), and a METEOR computed without WordNet silently drops the synonym stage. So the libraries are pinned (the
`eval` extra: nltk 3.10.4, rouge-score 0.1.2), WordNet is checked before scoring, and
`tests/fixtures/metrics/` holds numbers computed by the reference definitions in a separate environment.
"""

from __future__ import annotations

import math
from functools import lru_cache

from .wordnet import check_wordnet

METRICS = ("bleu", "rouge_l", "meteor")
EVAL_EXTRA_HINT = (
    'The evaluation metrics need nltk and rouge-score: pip install -e ".[eval]" (nltk==3.10.4, rouge-score==0.1.2)'
)


def _require_eval_packages():
    try:
        from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
        from nltk.translate.meteor_score import meteor_score
        from rouge_score import rouge_scorer
    except ImportError as error:
        raise ImportError(f"{EVAL_EXTRA_HINT} ({error}).") from error
    return sentence_bleu, SmoothingFunction, meteor_score, rouge_scorer


@lru_cache(maxsize=1)
def _scorers():
    sentence_bleu, SmoothingFunction, meteor_score, rouge_scorer = _require_eval_packages()
    wordnet = check_wordnet()
    rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    smoothing = SmoothingFunction().method4
    return {
        "bleu": lambda p, r: float(sentence_bleu([r.split()], p.split(), smoothing_function=smoothing)),
        "rouge_l": lambda p, r: float(rouge.score(r, p)["rougeL"].fmeasure),
        "meteor": lambda p, r: float(meteor_score([r.split()], p.split(), wordnet=wordnet)),
    }


def require_metrics() -> None:
    """Fail now (not after a long generation) when the `eval` extra or WordNet is missing."""
    _scorers()


def _check_pairs(predictions, references) -> None:
    for name, texts in (("predictions", predictions), ("references", references)):
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError(f"`{name}` must be a list of strings, got {type(texts).__name__}.")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"`{name}[{i}]` is {type(text).__name__}, not a string.")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references: they must pair up.")
    if not predictions:
        raise ValueError("No pairs to score: give at least one prediction and reference.")


def pair_scores(prediction: str, reference: str, metrics=METRICS) -> dict[str, float]:
    """The metrics of one pair, each in [0, 1] (not x 100)."""
    scorers = _scorers()
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"Unknown metric(s) {sorted(unknown)}; choose from {METRICS}.")
    return {name: scorers[name](prediction, reference) for name in metrics}


def nlg_scores(predictions, references, metrics=METRICS, return_pairs: bool = False) -> dict:
    """Means over pairs, x 100, of BLEU / ROUGE-L F1 / METEOR as the reference defines them.

    Args:
        predictions, references: lists of strings, paired by position (empty strings score 0, as in the reference).
        metrics: a subset of ("bleu", "rouge_l", "meteor").
        return_pairs: also return `"pairs"`, the per-pair scores (in [0, 1]).

    Raises `ImportError` without the `eval` extra and `WordNetMissingError` without WordNet.
    """
    _check_pairs(predictions, references)
    per_pair = [pair_scores(p, r, metrics) for p, r in zip(predictions, references)]
    result = {name: 100.0 * math.fsum(s[name] for s in per_pair) / len(per_pair) for name in metrics}
    result["count"] = len(per_pair)
    if return_pairs:
        result["pairs"] = per_pair
    return result


__all__ = ["METRICS", "nlg_scores", "pair_scores", "require_metrics"]
