"""The offline default model of `sonar-llm generate` and the README.

The package ships a miniature SONAR + SONAR-LLM trained on a generated story world
(`examples/train_demo_world.py`): a demo of the method, not a language model. If that folder is missing (a broken
installation, or a source checkout without it), `default_model_path` refuses with an error rather than building a
random-weight stand-in, whose output would be noise that looks like an answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGED_DEMO = Path(__file__).parent / "demo_model"
DEMO_LABEL = (
    "Demo model: a miniature SONAR-LLM trained offline on a small generated story world "
    "(a demonstration of the method, not a language model)."
)


def default_model_path(verbose: bool = False) -> str:
    """The packaged demo model's folder; a `FileNotFoundError` saying what to do when the package lacks it."""
    if not (PACKAGED_DEMO / "config.json").exists():
        raise FileNotFoundError(
            f"The offline demo model is missing from this installation ({PACKAGED_DEMO} holds no config.json). "
            "Reinstall the package (`pip install -e .` from a clone, which ships sonar_llm_hf/demo/demo_model), "
            "rebuild it with `python examples/train_demo_world.py --install sonar_llm_hf/demo/demo_model`, or pass a "
            "model: `--model PATH_OR_REPO`."
        )
    if verbose:
        print(DEMO_LABEL, file=sys.stderr)
    return str(PACKAGED_DEMO)
