"""Configuration of SONAR-LLM (arXiv 2508.05305): a Llama backbone over SONAR sentence embeddings.

The composite holds three sub-configurations, named as in the reference repo's JSON (`llama_config`) and as our
SONAR classes: `llama_config` (the backbone; its token vocabulary is unused and kept at one row), `encoder_config`
and `decoder_config` (the frozen SONAR text encoder and decoder).
"""

from __future__ import annotations

import copy
import warnings

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, PreTrainedConfig

from .configuration_sonar_text import SonarTextDecoderConfig, SonarTextEncoderConfig

# Settings shared by every released backbone (reference `SonarLLM_*.json`).
_COMMON_LLAMA = dict(
    hidden_act="silu",
    max_position_embeddings=131072,
    initializer_range=0.02,
    rms_norm_eps=1e-6,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
    },
    attention_bias=False,
    attention_dropout=0.0,
    mlp_bias=False,
    tie_word_embeddings=False,
    # The reference carries Llama-3's 128,256-token vocabulary, which never receives a gradient; we keep one row.
    vocab_size=1,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)

# Backbone sizes of the released checkpoints. The reference JSONs omit `num_key_value_heads` (plain MHA); the
# 600M and 900M models need an explicit `head_dim` because heads x head_dim != hidden. The 1.3B row is inferred
# (hidden 2048, MHA, 1.1B trainable parameters): read the published config.json when converting it.
SONAR_LLM_PRESETS: dict[str, dict] = {
    "100M": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=16, head_dim=32),
    "300M": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=10, num_attention_heads=16, head_dim=64),
    "600M": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=16, num_attention_heads=26, head_dim=64),
    "900M": dict(hidden_size=1536, intermediate_size=6144, num_hidden_layers=17, num_attention_heads=32, head_dim=64),
    "1.3B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, head_dim=64),
}
# Presets whose shape no published config confirms: `from_preset` says so.
UNCONFIRMED_PRESETS = {
    "1.3B": "inferred from the paper (hidden 2048, 16 layers, 32 heads; 1.1B trainable parameters), not from a "
    "published config",
}


@strict
class SonarLLMBackboneConfig(LlamaConfig):
    """Llama settings of the backbone.

    Only the head check differs from `LlamaConfig`: the released 600M and 900M backbones have
    heads x head_dim != hidden (26 x 64 vs 1280, 32 x 64 vs 1536), which Llama's attention supports through
    `head_dim` but `LlamaConfig`'s validation rejects.
    """

    model_type = "sonar_llm_backbone"

    def validate_architecture(self):
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be a multiple of `num_key_value_heads` "
                f"({self.num_key_value_heads})."
            )


def llama_preset(name: str, **overrides) -> SonarLLMBackboneConfig:
    """The backbone config of a released size (`"100M"`, `"300M"`, `"600M"`, `"900M"`, `"1.3B"`)."""
    key = name.upper()
    if key not in SONAR_LLM_PRESETS:
        raise ValueError(f"Unknown SONAR-LLM preset {name!r}; choose one of {', '.join(SONAR_LLM_PRESETS)}.")
    settings = {**copy.deepcopy(_COMMON_LLAMA), **SONAR_LLM_PRESETS[key]}
    settings.update(overrides)
    settings.setdefault("num_key_value_heads", settings["num_attention_heads"])  # plain MHA, as released
    return SonarLLMBackboneConfig(**settings)


LOSS_TYPES = ("ce", "mse", "ce+mse")


def check_loss_type(value) -> str:
    """`value` if it is exactly one of `LOSS_TYPES`, else a `TypeError`/`ValueError` naming the choices.

    No case folding or aliases: "CE" or "ce_mse" are refused rather than guessed at.
    """
    if not isinstance(value, str):
        raise TypeError(f"`loss_type` must be a string, one of {', '.join(map(repr, LOSS_TYPES))}; got "
                        f"{type(value).__name__} {value!r}.")  # fmt: skip
    if value not in LOSS_TYPES:
        hint = next((f" (did you mean {name!r}?)" for name in LOSS_TYPES
                     if name == value.strip().lower().replace("_", "+").replace("-", "+")), "")  # fmt: skip
        raise ValueError(f"`loss_type` must be exactly 'ce', 'mse' or 'ce+mse', got {value!r}{hint}.")
    return value


@strict
class SonarLLMConfig(PreTrainedConfig):
    r"""
    Configuration of [`SonarLLMForCausalSentenceModeling`].

    Args:
        llama_config (`LlamaConfig` or `dict`): the backbone (hidden size, layers, heads, head_dim, FFN, llama3 RoPE,
            RMSNorm eps). Defaults to the 100M preset.
        encoder_config, decoder_config (`SonarTextEncoderConfig`/`SonarTextDecoderConfig` or `dict`): the frozen SONAR
            text encoder and decoder. Default to full-size SONAR (d 1024, 24 layers, vocab 256,206).
        embed_dim (`int`, defaults to 1024): SONAR embedding width; must equal both SONAR `d_model`s.
        eos_sentence (`str`, defaults to "End of sequence."): the sentence whose embedding ends a document.
        begin_sentence (`str`, defaults to "Begin of text."): prepended to prompts when `add_begin` is True.
        add_begin (`bool`, defaults to False): whether the model was trained with the begin sentence.
        default_lang (`str`, defaults to "eng_Latn"): language of prompts and of training targets.
        loss_type (`str`, defaults to "ce"): "ce" (the paper's token cross-entropy through the frozen decoder),
            "mse" (Large-Concept-Model style regression on embeddings) or "ce+mse"; exactly these names, checked on
            construction and on assignment. "ce" and "ce+mse" are means over target tokens (in "ce+mse" the MSE of a
            sentence counts once per target token of it), "mse" the plain mean over predicted sentences, whatever
            the labels' layout; with `Trainer`'s one count each is exact under gradient accumulation and data
            parallelism (see `SonarLLMForCausalSentenceModeling.forward`).
        mse_weight (`float`, defaults to 1.0): weight of the MSE term in "ce+mse".
        duplicate_final_eos_target (`bool`, defaults to False): reproduce the reference training script's extra
            `</s>` -> `</s>` target at the end of every sentence (off by default: it is a quirk, not the paper's loss).
        ce_chunk_size (`int`, defaults to 256): target tokens per chunk of the 256k-vocabulary projection (256 MiB of
            fp32 logits at full size), and per checkpointed group of sentences through the frozen decoder.
        train_sonar_decoder (`bool`, defaults to False): unfreeze the SONAR decoder (the paper's v2 ablation).

    Example:

    ```python
    >>> from sonar_llm_hf import SonarLLMConfig
    >>> config = SonarLLMConfig.from_preset("900M")
    ```
    """

    model_type = "sonar_llm"
    sub_configs_defaults = {
        "llama_config": SonarLLMBackboneConfig,
        "encoder_config": SonarTextEncoderConfig,
        "decoder_config": SonarTextDecoderConfig,
    }

    llama_config: dict | PreTrainedConfig | None = None
    encoder_config: dict | PreTrainedConfig | None = None
    decoder_config: dict | PreTrainedConfig | None = None
    embed_dim: int = 1024
    eos_sentence: str = "End of sequence."
    begin_sentence: str = "Begin of text."
    add_begin: bool = False
    default_lang: str = "eng_Latn"
    loss_type: str = "ce"
    mse_weight: float = 1.0
    duplicate_final_eos_target: bool = False
    ce_chunk_size: int = 256
    train_sonar_decoder: bool = False
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        if self.llama_config is None:
            self.llama_config = llama_preset("100M")
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        """Refuse combinations that cannot run, naming the values (plain `ValueError`s, raised at construction)."""
        for name, sub in (("encoder_config", self.encoder_config), ("decoder_config", self.decoder_config)):
            if sub.d_model != self.embed_dim:
                raise ValueError(
                    f"`embed_dim` ({self.embed_dim}) must equal the SONAR {name}.d_model ({sub.d_model})."
                )
        check_loss_type(self.loss_type)
        if self.ce_chunk_size < 1:
            raise ValueError(f"`ce_chunk_size` must be positive, got {self.ce_chunk_size}.")

    def __setattr__(self, key, value):
        # Checked on every assignment too (`config.loss_type = "CE"`, `from_pretrained(..., loss_type=...)`), so a
        # wrong name fails where it is written, not at the first training step.
        if key == "loss_type":
            check_loss_type(value)
        super().__setattr__(key, value)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> SonarLLMConfig:
        """A released size with full-size SONAR: `SonarLLMConfig.from_preset("900M", add_begin=True)`. A size whose
        shape is inferred (1.3B) comes with a warning: convert its checkpoint from its own config.json."""
        llama = llama_preset(name)
        note = UNCONFIRMED_PRESETS.get(name.upper())
        if note:
            warnings.warn(
                f"The {name.upper()} SONAR-LLM backbone shape is {note}. Check it against the checkpoint you use "
                "(the converter compares every weight's shape, `--config` takes its JSON).",
                UserWarning,
                stacklevel=2,
            )
        return cls(llama_config=llama, **kwargs)

    @property
    def hidden_size(self) -> int:
        return self.llama_config.hidden_size


__all__ = [
    "SonarLLMConfig", "SonarLLMBackboneConfig", "SONAR_LLM_PRESETS", "UNCONFIRMED_PRESETS", "llama_preset",
    "LOSS_TYPES", "check_loss_type",
]  # fmt: skip
