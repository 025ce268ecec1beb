"""The paper's evaluation protocol (arXiv 2508.05305, FusionBrainLab/SONAR-LLM `evaluate_nlg.py`, `gpt_eval.py`) as
a library: NLG metrics with the reference's exact definitions, the NLG / summarization / token cross-entropy
protocols, the GPT-4o judge's prompts and client, and `sonar-llm evaluate`.

    from sonar_llm_hf.evaluation import nlg_scores, run_nlg, select_documents
    nlg_scores(["the kitty sat on the rug"], ["the cat sat on the mat"])   # {"bleu", "rouge_l", "meteor"} x 100

The metrics need the `eval` extra (`pip install -e ".[eval]"`) and WordNet (`python -m
sonar_llm_hf.evaluation.wordnet --install`, from Debian's wordnet packages). Names are imported on first use, so
`python -m sonar_llm_hf.evaluation.wordnet` and `.evaluate` run their module without importing it twice.
"""

import importlib

_EXPORTS = {
    "evaluate": ["TASKS", "add_evaluate_arguments", "load_split", "main", "results_markdown", "run_evaluate",
                 "run_evaluation"],
    "judge": ["ChatClient", "JudgeError", "assessment_messages", "continuation_text", "export_judge_prompts",
              "grade_table", "grading_messages", "judge_stories", "parse_grades"],
    "metrics": ["METRICS", "nlg_scores", "pair_scores", "require_metrics"],
    "protocol": ["PREFIXES", "continue_documents", "first_sentence", "prefix_length", "run_nlg", "run_summarization",
                 "select_documents", "token_cross_entropy"],
    "wordnet": ["WordNetMissingError", "check_wordnet", "find_wordnet", "install_wordnet"],
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
