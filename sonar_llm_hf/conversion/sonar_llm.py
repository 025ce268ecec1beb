"""Released SONAR-LLM checkpoints -> `SonarLLMForCausalSentenceModeling` folders.

Two source layouts exist (REFERENCE.md §2.3-2.4):
- a training checkpoint (`checkpoint_step_N.pt`): `model_state_dict` with `llama_model.*`, `forward_proj.linear.*`,
  `reverse_proj.linear.*` and the frozen `sonar_decoder.*`, next to optimizer, scheduler and RNG states;
- a Hub-layout folder: `config.json` (`llama_config`, `embed_dim`, `add_begin`) and `pytorch_model.bin`.
Both are read with `weights_only=True`; numpy's RNG state needs exactly two numpy reconstructors, allow-listed by
name. The untrained 128k-token Llama embedding and LM head are dropped; SONAR comes from a folder made by
`convert_sonar_to_hf.py`, and the checkpoint's own copy of the decoder is compared with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.configuration_sonar_llm import SONAR_LLM_PRESETS, SonarLLMBackboneConfig, SonarLLMConfig, llama_preset
from .sonar import DECODER_KEY_MAPPING, convert_state
from .checkpoints import ConversionError, check_against_model, load_checkpoint, map_keys

BACKBONE_KEY_MAPPING = {
    r"llama_model\.model\.layers\.(\d+)\.(.+)": r"model.layers.\1.\2",
    r"llama_model\.model\.norm\.weight": r"model.norm.weight",
    r"forward_proj\.linear\.(weight|bias)": r"sentence_in_proj.\1",
    r"reverse_proj\.linear\.(weight|bias)": r"sentence_out_proj.\1",
    # never trained (sentences enter through forward_proj), dropped and reported
    r"llama_model\.model\.embed_tokens\.weight": None,
    r"llama_model\.lm_head\.weight": None,
    r"llama_model\.model\.rotary_emb\.inv_freq": None,
    r"llama_model\.model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq": None,
    r"sonar_decoder\..+": None,  # compared with SONAR_DIR separately
}
DEAD_KEYS = ("llama_model.model.embed_tokens.weight", "llama_model.lm_head.weight")


def _numpy_rng_globals() -> list:
    """What `np.random.get_state()` pickles, under its numpy 2 and numpy 1 names: arrays and their dtype."""
    import numpy as np

    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    uint32 = type(np.dtype("uint32"))
    return [
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        uint32,
        (uint32, "numpy.dtypes.UInt32DType"),
    ]


def read_source(checkpoint) -> tuple[dict[str, torch.Tensor], dict | None]:
    """-> (SONAR-LLM state dict, Hub-layout config.json or None)."""
    path = Path(checkpoint)
    hub_config = None
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ConversionError(f"{path} is a folder without config.json: not a SONAR-LLM Hub-layout folder.")
        hub_config = json.loads((path / "config.json").read_text())
        weights = path / "pytorch_model.bin"
        if not weights.exists():
            raise ConversionError(f"{path} holds no pytorch_model.bin.")
        path = weights
    loaded = load_checkpoint(path, allowed_globals=_numpy_rng_globals())
    if isinstance(loaded, dict) and "model_state_dict" in loaded:
        loaded = loaded["model_state_dict"]
    if not isinstance(loaded, dict) or not any(str(k).startswith("forward_proj.") for k in loaded):
        shown = list(loaded)[:6] if isinstance(loaded, dict) else type(loaded).__name__
        raise ConversionError(
            f"{checkpoint} is not a SONAR-LLM checkpoint: no `forward_proj.linear.*` keys (found {shown})."
        )
    return loaded, hub_config


def backbone_config_from_reference(llama_config: dict) -> SonarLLMBackboneConfig:
    """The reference repo's `llama_config` dict (legacy rope keys, 128k vocabulary) -> our backbone config."""
    ignored = {"vocab_size", "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "pretraining_tp",
               "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "_name_or_path"}  # fmt: skip
    settings = {k: v for k, v in llama_config.items() if k not in ignored}
    settings.setdefault("num_key_value_heads", settings["num_attention_heads"])  # the JSONs omit it: plain MHA
    return SonarLLMBackboneConfig(**settings, vocab_size=1, tie_word_embeddings=False)


def resolve_backbone(config_json=None, preset: str | None = None, hub_config: dict | None = None):
    """-> (backbone config, embed_dim, where it came from): `--config`, else `--preset`, else the Hub folder's own.

    A checkpoint's tensors do not record attention heads or head_dim, so one of the three is required.
    """
    if config_json is not None:
        try:
            reference = json.loads(Path(config_json).read_text())
        except (OSError, ValueError) as error:
            raise ConversionError(f"Cannot read the backbone config {config_json}: {error}") from error
        if "llama_config" not in reference:
            raise ConversionError(
                f"{config_json} has no `llama_config`: expected the reference repo's SonarLLM_*.json layout."
            )
        source, llama_config, embed_dim = f"--config {config_json}", reference["llama_config"], reference.get("embed_dim", 1024)
    elif preset is not None:
        if preset not in SONAR_LLM_PRESETS:
            raise ConversionError(f"Unknown preset {preset!r}; choose one of {', '.join(SONAR_LLM_PRESETS)}.")
        return llama_preset(preset), 1024, f"--preset {preset}"
    elif hub_config is not None:
        source, llama_config, embed_dim = "the folder's config.json", hub_config["llama_config"], hub_config.get("embed_dim", 1024)
    else:
        raise ConversionError(
            "A training checkpoint does not record attention heads or head_dim: pass --config SonarLLM_<size>.json "
            f"or --preset ({', '.join(SONAR_LLM_PRESETS)})."
        )
    try:
        return backbone_config_from_reference(llama_config), embed_dim, source
    except (KeyError, TypeError, ValueError) as error:
        raise ConversionError(
            f"The `llama_config` of {source} is not a usable Llama config ({type(error).__name__}: {error})."
        ) from error


def matching_preset(config: SonarLLMBackboneConfig) -> str | None:
    for name, preset in SONAR_LLM_PRESETS.items():
        if all(getattr(config, k) == v for k, v in preset.items()):
            return name
    return None


def check_backbone_shapes(state: dict, config: SonarLLMBackboneConfig, embed_dim: int, source: str) -> None:
    """The tensors must fit the config given on the command line (heads and head_dim are invisible in them)."""
    layers = {int(k.split(".")[3]) for k in state if k.startswith("llama_model.model.layers.")}
    hidden = state["forward_proj.linear.weight"].shape[0]
    q = state.get("llama_model.model.layers.0.self_attn.q_proj.weight")
    mlp = state.get("llama_model.model.layers.0.mlp.up_proj.weight")
    found = dict(num_hidden_layers=len(layers), hidden_size=hidden,
                 attention_width=None if q is None else q.shape[0],
                 intermediate_size=None if mlp is None else mlp.shape[0],
                 embed_dim=state["forward_proj.linear.weight"].shape[1])  # fmt: skip
    wanted = dict(num_hidden_layers=config.num_hidden_layers, hidden_size=config.hidden_size,
                  attention_width=config.num_attention_heads * config.head_dim,
                  intermediate_size=config.intermediate_size, embed_dim=embed_dim)  # fmt: skip
    wrong = {k: (found[k], wanted[k]) for k in wanted if found[k] is not None and found[k] != wanted[k]}
    if wrong:
        details = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in wrong.items())
        preset = matching_preset(config)
        raise ConversionError(
            f"The checkpoint does not fit the backbone config from {source}"
            f"{f' (preset {preset})' if preset else ''}: {details}. Pass the config that trained it."
        )


def build_sonar_llm(
    checkpoint,
    sonar_dir,
    config_json=None,
    preset: str | None = None,
    add_begin: bool | None = None,
    source: tuple[dict, dict | None] | None = None,
) -> tuple["SonarLLMForCausalSentenceModeling", dict]:  # noqa: F821
    """Assemble the HF model from a reference checkpoint and a converted SONAR folder; returns it and a report.

    `source` is `read_source(checkpoint)` when the caller already holds it (a training checkpoint can be gigabytes).
    """
    from ..models.modeling_sonar_llm import SonarLLMForCausalSentenceModeling
    from ..models.modeling_sonar_text import SonarTextDecoder, SonarTextEncoder

    state, hub_config = read_source(checkpoint) if source is None else source
    # 1. backbone config: --config, --preset, or the Hub folder's config.json
    backbone, embed_dim, source = resolve_backbone(config_json, preset, hub_config)
    if add_begin is None:
        add_begin = bool((hub_config or {}).get("add_begin", False))
    check_backbone_shapes(state, backbone, embed_dim, source)

    # 2. SONAR from SONAR_DIR
    sonar_dir = Path(sonar_dir)
    for part in ("encoder", "decoder"):
        if not (sonar_dir / part / "config.json").exists():
            raise ConversionError(f"{sonar_dir / part} is missing: SONAR_DIR must be the output of convert_sonar_to_hf.py.")
    encoder = SonarTextEncoder.from_pretrained(sonar_dir / "encoder")
    decoder = SonarTextDecoder.from_pretrained(sonar_dir / "decoder")
    if encoder.config.d_model != embed_dim:
        raise ConversionError(
            f"SONAR_DIR embeddings are {encoder.config.d_model}-d but the checkpoint's projectors expect {embed_dim}-d."
        )
    config = SonarLLMConfig(llama_config=backbone, encoder_config=encoder.config.to_dict(),
                            decoder_config=decoder.config.to_dict(), embed_dim=embed_dim, add_begin=add_begin)  # fmt: skip

    # 3. map keys, drop the dead vocabulary, compare the bundled decoder
    dropped = sum(state[k].numel() for k in DEAD_KEYS if k in state)
    converted = map_keys(state, BACKBONE_KEY_MAPPING, "SONAR-LLM checkpoint")
    for name, tensor in encoder.state_dict().items():
        converted[f"sonar_encoder.{name}"] = tensor
    for name, tensor in decoder.state_dict().items():
        converted[f"sonar_decoder.{name}"] = tensor
    report = {"dropped_parameters": dropped, "preset": matching_preset(backbone), "config_source": source}
    report["decoder_copy"] = compare_bundled_decoder(state, decoder)
    with torch.device("meta"):
        skeleton = SonarLLMForCausalSentenceModeling(config)
    check_against_model(converted, skeleton, "SONAR-LLM checkpoint")
    model = SonarLLMForCausalSentenceModeling(config)
    model.load_state_dict(converted, strict=True)
    model.tokenizer = encoder.tokenizer
    return model.eval(), report


def compare_bundled_decoder(state: dict, decoder) -> str:
    """The checkpoint's frozen decoder should equal SONAR_DIR's; say how it differs if not."""
    prefix = "sonar_decoder."
    bundled = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not bundled:
        return "absent (Hub layout): SONAR_DIR's decoder is used"
    if bundled and all(k.startswith("model.") for k in bundled):  # wrapped in an outer module
        bundled = {k[len("model.") :]: v for k, v in bundled.items()}
    try:
        mapped = convert_state(bundled, DECODER_KEY_MAPPING, "bundled SONAR decoder")
    except ConversionError as error:
        return f"not comparable: {error}"
    ours = decoder.state_dict()
    differences = [float((mapped[k].float() - ours[k].float()).abs().max()) for k in mapped if k in ours]
    if set(mapped) != set(ours):
        return "differs: the bundled decoder has other tensors than SONAR_DIR's"
    worst = max(differences) if differences else 0.0
    return "identical to SONAR_DIR" if worst == 0.0 else f"differs from SONAR_DIR (max abs diff {worst:.3g})"


def reference_predictions(state: dict, backbone: SonarLLMBackboneConfig, embeddings: torch.Tensor) -> torch.Tensor:
    """The reference wrapper's forward restated from the source keys: Llama over forward_proj(E), reverse_proj."""
    from transformers import LlamaModel

    llama = LlamaModel(backbone).eval()
    llama_state = {k[len("llama_model.model.") :]: v for k, v in state.items() if k.startswith("llama_model.model.")}
    llama_state.pop("embed_tokens.weight", None)
    llama.load_state_dict(llama_state, strict=False)
    with torch.no_grad():
        hidden = torch.nn.functional.linear(embeddings, state["forward_proj.linear.weight"], state["forward_proj.linear.bias"])
        out = llama(inputs_embeds=hidden).last_hidden_state
        return torch.nn.functional.linear(out, state["reverse_proj.linear.weight"], state["reverse_proj.linear.bias"])


def convert_sonar_llm(
    checkpoint,
    sonar_dir,
    output,
    config_json=None,
    preset: str | None = None,
    dtype: str | None = None,
    repo_id: str | None = None,
) -> dict:
    """Convert, write a Hub-ready folder (weights, config with auto_map, generation config, tokenizer, code, card),
    verify it by reloading against the reference wrapper's predictions. Publishing is conversion/publish.py's job."""
    from transformers import AutoModel

    from .checkpoints import parse_dtype
    from .output import atomic_output_dir
    from .model_card import build_model_card

    source = read_source(checkpoint)
    model, report = build_sonar_llm(checkpoint, sonar_dir, config_json=config_json, preset=preset, source=source)
    state = source[0]
    # 1. the converted model computes what the reference wrapper computes (fp32, before any cast)
    probe = torch.randn(2, 5, model.config.embed_dim, generator=torch.Generator().manual_seed(0)) * 0.05
    expected = reference_predictions(state, model.config.llama_config, probe)
    with torch.no_grad():
        ours = model(probe).predicted_embeddings
    if not torch.allclose(ours, expected, rtol=0, atol=1e-6):
        raise ConversionError(f"Converted predictions differ from the reference by {(ours - expected).abs().max():.3g}.")
    torch_dtype = parse_dtype(dtype)
    if torch_dtype is not None:
        model.to(torch_dtype)
    # 2. write the folder atomically
    output = Path(output)
    name = repo_id or output.name
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("sonar_"))
    total = sum(p.numel() for p in model.parameters())
    with atomic_output_dir(output, is_same_model=_holds_sonar_llm) as staging:
        model.save_pretrained(staging)
        model.tokenizer.save_pretrained(staging)
        card = build_model_card(name, report["preset"], model.config, source=f"`{Path(checkpoint).name}`",
                                dropped_parameters=report["dropped_parameters"], trainable=trainable, total=total)  # fmt: skip
        card.save(staging / "README.md")
        # 3. reload what was written and check it reproduces the converted model exactly
        reloaded = AutoModel.from_pretrained(staging, dtype=model.dtype)
        with torch.no_grad():
            same = torch.equal(reloaded(probe.to(model.dtype)).predicted_embeddings, model(probe.to(model.dtype)).predicted_embeddings)
        if not same:
            raise ConversionError("The written folder does not reproduce the converted model.")
    report.update(output=str(output), trainable_parameters=trainable, total_parameters=total)
    return report


def _holds_sonar_llm(path: Path) -> bool:
    config = path / "config.json"
    return config.exists() and json.loads(config.read_text()).get("model_type") == "sonar_llm"

