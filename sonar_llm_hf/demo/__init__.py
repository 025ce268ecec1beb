"""The offline default model of `sonar-llm generate` and the README.

The package ships a miniature SONAR + SONAR-LLM trained on a generated story world
(`examples/train_demo_world.py`): a demo of the method, not a language model. If that folder is missing (for
example in a source checkout before it was built), a tiny random-weight model is built and cached instead, and is
labelled as such: its output is noise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGED_DEMO = Path(__file__).parent / "demo_model"
DEMO_LABEL = (
    "Demo model: a miniature SONAR-LLM trained offline on a small generated story world "
    "(a demonstration of the method, not a language model)."
)
RANDOM_LABEL = "Tiny RANDOM-weight model (no trained demo model found): its output is noise."


def _cache_dir() -> Path:
    root = os.environ.get("SONAR_LLM_HF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sonar_llm_hf")
    return Path(root)


def build_tiny_random_model(path: Path) -> Path:
    """A deterministic tiny model with the real architecture and a SentencePiece vocabulary trained here."""
    import torch

    from .. import SonarLLMConfig, SonarLLMForCausalSentenceModeling, SonarTextDecoderConfig, SonarTextEncoderConfig
    from .. import llama_preset
    from ..testing.tiny import build_tiny_tokenizer

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(path / "_spm")
    text = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=64, decoder_ffn_dim=64, vocab_size=len(tokenizer) + 2)  # fmt: skip
    config = SonarLLMConfig(
        llama_config=llama_preset("100M", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, head_dim=16),
        encoder_config=SonarTextEncoderConfig(**text),
        decoder_config=SonarTextDecoderConfig(**text),
        embed_dim=32,
    )
    torch.manual_seed(0)
    model = SonarLLMForCausalSentenceModeling(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def default_model_path(verbose: bool = False) -> str:
    """The packaged demo model, or a cached tiny random model when the package has none."""
    if (PACKAGED_DEMO / "config.json").exists():
        if verbose:
            print(DEMO_LABEL, file=sys.stderr)
        return str(PACKAGED_DEMO)
    path = _cache_dir() / "tiny-random-v1"
    if not (path / "config.json").exists():
        build_tiny_random_model(path)
    if verbose:
        print(RANDOM_LABEL, file=sys.stderr)
    return str(path)
