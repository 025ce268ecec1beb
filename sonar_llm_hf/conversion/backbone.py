"""Which backbone a SONAR-LLM checkpoint holds: its config sources, what its tensors show, and `add_begin`.

A training checkpoint's tensors fix the hidden size, depth, FFN width, the attention and key/value widths and the
projector widths, but not how the attention width splits into heads (nor RoPE or the norm epsilon). So the backbone
comes from the reference repo's JSON (`--config`), a preset, a Hub-layout folder's config.json, or the shapes plus
`num_attention_heads`; whichever it is must fit the tensors, and when it does not, the error names what the weights
show and the nearest preset. Each source is also kept as the reference's own `llama_config` dict, from which the
verification (`reference.py`) rebuilds the reference model independently of our translation of it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError

from ..models.configuration_sonar_llm import SONAR_LLM_PRESETS, SonarLLMBackboneConfig, llama_preset
from .checkpoints import ConversionError

LLAMA3_VOCAB = 128_256  # the reference's (never trained) Llama-3 token vocabulary
# What the reference repo's SonarLLM_{100M,300M,600M,900M}.json hold besides the sizes (REFERENCE.md §2.2), in its
# own (transformers 4.x, legacy RoPE keys) layout; written out here, not derived from our preset configs.
REFERENCE_COMMON = {
    "hidden_act": "silu", "max_position_embeddings": 131072, "initializer_range": 0.02, "rms_norm_eps": 1e-06,
    "use_cache": True, "pretraining_tp": 1, "tie_word_embeddings": True, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
}  # fmt: skip
NO_BEGIN_RECORDED = "not recorded in the checkpoint; the reference's training scripts prepend no begin sentence"


@dataclass
class Backbone:
    config: SonarLLMBackboneConfig  # what the converted model is built from
    embed_dim: int
    source: str  # where it came from, for messages and the model card
    reference_llama_config: dict  # the same settings as the reference code reads them (LlamaConfig(**this))
    add_begin: tuple[bool, str] | None = None  # (value, where) when the source records it


def backbone_config_from_reference(llama_config: dict) -> SonarLLMBackboneConfig:
    """The reference repo's `llama_config` dict (legacy rope keys, 128k vocabulary) -> our backbone config."""
    ignored = {
        "vocab_size",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "tie_word_embeddings",
        "pretraining_tp",
        "architectures",
        "model_type",
        "torch_dtype",
        "dtype",
        "transformers_version",
        "_name_or_path",
    }
    # deep copies: transformers writes `rope_theta` into the `rope_scaling` dict it is given
    settings = {k: copy.deepcopy(v) for k, v in llama_config.items() if k not in ignored}
    settings.setdefault("num_key_value_heads", settings["num_attention_heads"])  # the JSONs omit it: plain MHA
    # the backbone has no token vocabulary: Llama's default token ids (1, 2) would be out of it, and warned about
    return SonarLLMBackboneConfig(**settings, vocab_size=1, tie_word_embeddings=False, bos_token_id=None,
                                  eos_token_id=None, pad_token_id=None)  # fmt: skip


def preset_reference_json(name: str) -> dict:
    """The reference repo's `llama_config` for a released size (for 1.3B, which has no public JSON: inferred)."""
    return {**copy.deepcopy(REFERENCE_COMMON), **SONAR_LLM_PRESETS[name], "vocab_size": LLAMA3_VOCAB}


def read_reference_json(path) -> dict:
    try:
        reference = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ConversionError(f"Cannot read the backbone config {path}: {error}") from error
    if not isinstance(reference, dict) or "llama_config" not in reference:
        raise ConversionError(f"{path} has no `llama_config`: expected the reference repo's SonarLLM_*.json layout.")
    return reference


def _stated_begin(settings: dict, where: str) -> tuple[bool, str] | None:
    if "add_begin" not in settings:
        return None
    if not isinstance(settings["add_begin"], bool):
        raise ConversionError(f"`add_begin` in {where} is {settings['add_begin']!r}; expected true or false.")
    return settings["add_begin"], where


def resolve_backbone(config_json=None, preset: str | None = None, hub_config: dict | None = None, state=None,
                     num_attention_heads: int | None = None) -> Backbone:  # fmt: skip
    """`--config`, else `--preset`, else the Hub folder's config.json, else the shapes of `state` plus the heads.

    A checkpoint's tensors do not record attention heads or head_dim: with none of the first three, the heads are
    the one thing asked for (the error says what the weights show and which preset they fit, if any).
    """
    if num_attention_heads is not None and (config_json is not None or preset is not None or hub_config is not None):
        raise ConversionError(
            "--num-attention-heads is for a training checkpoint with no config: --config, --preset and a Hub "
            "folder's config.json record the heads already."
        )
    if config_json is not None:
        document = read_reference_json(config_json)
        source = f"--config {config_json}"
        llama, embed_dim = document["llama_config"], document.get("embed_dim", 1024)
        begin = _stated_begin(document, source)
    elif preset is not None:
        if preset not in SONAR_LLM_PRESETS:
            raise ConversionError(f"Unknown preset {preset!r}; choose one of {', '.join(SONAR_LLM_PRESETS)}.")
        # our preset definition, checked by the verification against the reference's JSON restated independently
        source, llama, embed_dim, begin = f"--preset {preset}", preset_reference_json(preset), 1024, None
    elif hub_config is not None:
        source = "the folder's config.json"
        if "llama_config" not in hub_config:
            raise ConversionError("The folder's config.json has no `llama_config`: not a SONAR-LLM Hub-layout folder.")
        llama, embed_dim = hub_config["llama_config"], hub_config.get("embed_dim", 1024)
        begin = _stated_begin(hub_config, source)
    elif state is not None:
        llama, embed_dim = infer_reference_json(state, num_attention_heads)
        source, begin = f"the checkpoint's shapes with {num_attention_heads} attention heads", None
    else:
        raise ConversionError(
            "A training checkpoint does not record attention heads or head_dim: pass --config SonarLLM_<size>.json, "
            f"--preset ({', '.join(SONAR_LLM_PRESETS)}) or --num-attention-heads."
        )
    if not isinstance(llama, dict):
        raise ConversionError(f"The `llama_config` of {source} is not a JSON object.")
    reference = llama
    if hub_config is not None and source != "the folder's config.json":
        # the folder records how its weights were built: the reference is rebuilt from that, and its add_begin holds
        own = _stated_begin(hub_config, "the folder's config.json")
        if begin is not None and own is not None and begin[0] != own[0]:
            raise ConversionError(f"`add_begin` is {begin[0]} in {begin[1]} but {own[0]} in {own[1]}.")
        begin = begin or own
        if isinstance(hub_config.get("llama_config"), dict):
            reference = hub_config["llama_config"]
    try:
        config = llama_preset(preset) if preset is not None else backbone_config_from_reference(llama)
    except (KeyError, TypeError, ValueError, StrictDataclassError) as error:
        raise ConversionError(
            f"The `llama_config` of {source} is not a usable Llama config ({type(error).__name__}: {error})."
        ) from error
    return Backbone(config, embed_dim, source, copy.deepcopy(reference), begin)


def resolve_add_begin(stated: bool | None, backbone: Backbone) -> tuple[bool, str]:
    """-> (add_begin, where it came from): `--add-begin/--no-add-begin`, else the config source's, else False.

    A flag that contradicts the config source is refused: one of the two is wrong about how the model was trained.
    """
    recorded = backbone.add_begin
    if stated is not None:
        flag = "--add-begin" if stated else "--no-add-begin"
        if recorded is not None and recorded[0] != stated:
            raise ConversionError(
                f"{flag} contradicts `add_begin: {str(recorded[0]).lower()}` in {recorded[1]}. Drop the flag to use "
                "the recorded value, or correct the config."
            )
        return stated, flag
    return recorded if recorded is not None else (False, NO_BEGIN_RECORDED)


# -- what the tensors show ----------------------------------------------------------------------------------------


def weights_show(state: dict) -> dict:
    """The sizes the checkpoint's tensors fix (None where a tensor is absent)."""
    layers = {int(k.split(".")[3]) for k in state if k.startswith("llama_model.model.layers.")}
    first = "llama_model.model.layers.0."
    shape = lambda key, dim: state[key].shape[dim] if key in state else None  # noqa: E731
    return dict(
        hidden_size=shape("forward_proj.linear.weight", 0),
        num_hidden_layers=len(layers),
        intermediate_size=shape(first + "mlp.up_proj.weight", 0),
        attention_width=shape(first + "self_attn.q_proj.weight", 0),
        key_value_width=shape(first + "self_attn.k_proj.weight", 0),
        embed_dim=shape("forward_proj.linear.weight", 1),
        reverse_proj=tuple(state["reverse_proj.linear.weight"].shape)
        if "reverse_proj.linear.weight" in state
        else None,
    )


def describe(shown: dict) -> str:
    reverse = shown["reverse_proj"]
    return (
        f"hidden size {shown['hidden_size']}, {shown['num_hidden_layers']} layers, intermediate size "
        f"{shown['intermediate_size']}, attention width {shown['attention_width']} (key/value "
        f"{shown['key_value_width']}), projectors {shown['embed_dim']} -> {shown['hidden_size']} (forward_proj) and "
        f"{reverse[1] if reverse else '?'} -> {reverse[0] if reverse else '?'} (reverse_proj)"
    )


def _preset_shows(name: str) -> dict:
    p = SONAR_LLM_PRESETS[name]
    width = p["num_attention_heads"] * p["head_dim"]
    return dict(hidden_size=p["hidden_size"], num_hidden_layers=p["num_hidden_layers"],
                intermediate_size=p["intermediate_size"], attention_width=width, key_value_width=width,
                embed_dim=1024, reverse_proj=(1024, p["hidden_size"]))  # fmt: skip


def nearest_preset(shown: dict) -> tuple[str, list[str]]:
    """The preset whose shapes differ from `shown` in the fewest sizes (then by hidden size), and those sizes."""

    def distance(name):
        wanted = _preset_shows(name)
        wrong = [k for k in wanted if shown[k] is not None and shown[k] != wanted[k]]
        return len(wrong), abs((shown["hidden_size"] or 0) - wanted["hidden_size"]), wrong

    name = min(SONAR_LLM_PRESETS, key=lambda n: distance(n)[:2])
    return name, distance(name)[2]


def _nearest_text(shown: dict) -> str:
    name, wrong = nearest_preset(shown)
    if not wrong:
        return f"They fit preset {name} exactly."
    return f"The nearest preset, {name}, differs in {', '.join(wrong)}."


def matching_preset(config: SonarLLMBackboneConfig) -> str | None:
    for name, preset in SONAR_LLM_PRESETS.items():
        if all(getattr(config, k) == v for k, v in preset.items()):
            return name
    return None


def check_backbone_shapes(state: dict, config: SonarLLMBackboneConfig, embed_dim: int, source: str) -> None:
    """The tensors must fit the config (heads and head_dim are invisible in them); else say what they show."""
    shown = weights_show(state)
    wanted = dict(num_hidden_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                  attention_width=config.num_attention_heads * config.head_dim,
                  key_value_width=config.num_key_value_heads * config.head_dim,
                  intermediate_size=config.intermediate_size, embed_dim=embed_dim)  # fmt: skip
    wrong = {k: (shown[k], wanted[k]) for k in wanted if shown[k] is not None and shown[k] != wanted[k]}
    if wrong:
        details = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in wrong.items())
        preset = matching_preset(config)
        raise ConversionError(
            f"The checkpoint does not fit the backbone config from {source}"
            f"{f' (preset {preset})' if preset else ''}: {details}. The weights show {describe(shown)}. "
            f"{_nearest_text(shown)} Pass the config that trained it."
        )


def infer_reference_json(state: dict, num_attention_heads: int | None) -> tuple[dict, int]:
    """A `llama_config` from the shapes, the reference JSONs' common settings and the heads; -> (it, embed_dim)."""
    shown = weights_show(state)
    width, kv_width = shown["attention_width"], shown["key_value_width"]
    if num_attention_heads is None:
        raise ConversionError(
            f"A training checkpoint does not record how its attention splits into heads. The weights show "
            f"{describe(shown)}. {_nearest_text(shown)} Pass --num-attention-heads N (N must divide {width}), or "
            f"--preset / --config SonarLLM_<size>.json if it is a released size."
        )
    if (
        None in (width, kv_width, shown["intermediate_size"])
        or num_attention_heads <= 0
        or (width % num_attention_heads)
    ):
        raise ConversionError(
            f"{num_attention_heads} attention heads do not divide the attention width {width} the weights show."
        )
    head_dim = width // num_attention_heads
    if kv_width % head_dim:
        raise ConversionError(f"The key/value width {kv_width} is not a whole number of {head_dim}-wide heads.")
    vocab = state.get("llama_model.model.embed_tokens.weight")
    llama = {**copy.deepcopy(REFERENCE_COMMON), "hidden_size": shown["hidden_size"],
             "intermediate_size": shown["intermediate_size"], "num_hidden_layers": shown["num_hidden_layers"],
             "num_attention_heads": num_attention_heads, "num_key_value_heads": kv_width // head_dim,
             "head_dim": head_dim, "vocab_size": LLAMA3_VOCAB if vocab is None else vocab.shape[0]}  # fmt: skip
    return llama, shown["embed_dim"]
