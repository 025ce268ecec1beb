"""Released SONAR-LLM checkpoints -> `SonarLLMForCausalSentenceModeling` folders.

Two source layouts exist (REFERENCE.md §2.3-2.4):
- a training checkpoint (`checkpoint_step_N.pt`): `model_state_dict` with `llama_model.*`, `forward_proj.linear.*`,
  `reverse_proj.linear.*` and the frozen `sonar_decoder.*`, next to optimizer, scheduler and RNG states;
- a Hub-layout folder: `config.json` (`llama_config`, `embed_dim`, `add_begin`) and `pytorch_model.bin`.
Both are read with `weights_only=True`; numpy's RNG state needs exactly two numpy reconstructors, allow-listed by
name. The untrained 128k-token Llama embedding and LM head are dropped; SONAR comes from a folder made by
`convert_sonar_to_hf.py`. A training checkpoint also holds its own copy of the SONAR decoder: one that differs from
SONAR_DIR's (a decoder trained with the backbone, or the wrong SONAR_DIR) is refused unless the caller chooses which
to convert, because silently pairing the backbone with another decoder hands back a different model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..models.configuration_sonar_llm import SonarLLMConfig
from .backbone import (  # noqa: F401 (re-exported: the CLI and tests import them from here)
    Backbone,
    backbone_config_from_reference,
    check_backbone_shapes,
    matching_preset,
    resolve_add_begin,
    resolve_backbone,
)
from .checkpoints import ConversionError, check_against_model, check_state_dict, load_checkpoint, map_keys
from .sonar import DECODER_KEY_MAPPING, build_decoder, convert_state

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
    return check_state_dict(loaded, f"SONAR-LLM checkpoint {checkpoint}"), hub_config


DECODER_CHOICES = ("check", "checkpoint", "sonar")  # refuse a mismatch / the checkpoint's own / SONAR_DIR's anyway


def build_sonar_llm(
    checkpoint,
    sonar_dir,
    config_json=None,
    preset: str | None = None,
    add_begin: bool | None = None,
    source: tuple[dict, dict | None] | None = None,
    decoder: str = "check",
    num_attention_heads: int | None = None,
) -> tuple[SonarLLMForCausalSentenceModeling, dict]:  # noqa: F821
    """Assemble the HF model from a reference checkpoint and a converted SONAR folder; returns it and a report.

    `source` is `read_source(checkpoint)` when the caller already holds it (a training checkpoint can be gigabytes).
    `decoder`: "check" (default) refuses a bundled decoder that differs from SONAR_DIR's or cannot be compared;
    "checkpoint" converts the checkpoint's own decoder; "sonar" uses SONAR_DIR's whatever the checkpoint holds.
    """
    from ..models.modeling_sonar_llm import SonarLLMForCausalSentenceModeling
    from ..models.modeling_sonar_text import SonarTextDecoder, SonarTextEncoder

    if decoder not in DECODER_CHOICES:
        raise ConversionError(f"decoder must be one of {DECODER_CHOICES}, not {decoder!r}.")
    state, hub_config = read_source(checkpoint) if source is None else source
    # 1. backbone config: --config, --preset, the Hub folder's config.json, or the shapes with the heads given
    backbone = resolve_backbone(config_json, preset, hub_config, state=state, num_attention_heads=num_attention_heads)
    begin, begin_source = resolve_add_begin(add_begin, backbone)
    check_backbone_shapes(state, backbone.config, backbone.embed_dim, backbone.source)

    # 2. SONAR from SONAR_DIR, the decoder possibly from the checkpoint
    sonar_dir = Path(sonar_dir)
    for part in ("encoder", "decoder"):
        if not (sonar_dir / part / "config.json").exists():
            raise ConversionError(
                f"{sonar_dir / part} is missing: SONAR_DIR must be the output of convert_sonar_to_hf.py."
            )
    encoder = SonarTextEncoder.from_pretrained(sonar_dir / "encoder")
    sonar_decoder = SonarTextDecoder.from_pretrained(sonar_dir / "decoder")
    if encoder.tokenizer is None:
        raise ConversionError(
            f"{sonar_dir / 'encoder'} holds no tokenizer, so the converted model could not read or write text: re-run "
            "convert_sonar_to_hf.py with --tokenizer sentencepiece.source.256000.model."
        )
    if encoder.config.d_model != backbone.embed_dim:
        raise ConversionError(
            f"SONAR_DIR embeddings are {encoder.config.d_model}-d but the checkpoint's projectors expect "
            f"{backbone.embed_dim}-d."
        )
    sonar_text_decoder, decoder_note = choose_decoder(state, sonar_decoder, decoder)
    config = SonarLLMConfig(llama_config=backbone.config, encoder_config=encoder.config.to_dict(),
                            decoder_config=sonar_text_decoder.config.to_dict(), embed_dim=backbone.embed_dim,
                            add_begin=begin)  # fmt: skip

    # 3. map keys, drop the dead vocabulary
    dropped = sum(state[k].numel() for k in DEAD_KEYS if k in state)
    converted = map_keys(state, BACKBONE_KEY_MAPPING, "SONAR-LLM checkpoint")
    for name, tensor in encoder.state_dict().items():
        converted[f"sonar_encoder.{name}"] = tensor
    for name, tensor in sonar_text_decoder.state_dict().items():
        converted[f"sonar_decoder.{name}"] = tensor
    report = {"dropped_parameters": dropped, "preset": matching_preset(backbone.config),
              "config_source": backbone.source, "reference_llama_config": backbone.reference_llama_config,
              "decoder_copy": decoder_note, "add_begin": begin, "add_begin_source": begin_source,
              "decoder_layout": bundled_decoder_layout(state)[1] or "none bundled"}  # fmt: skip
    with torch.device("meta"):
        skeleton = SonarLLMForCausalSentenceModeling(config)
    check_against_model(converted, skeleton, "SONAR-LLM checkpoint")
    model = SonarLLMForCausalSentenceModeling(config)
    model.load_state_dict(converted, strict=True)
    model.tokenizer = encoder.tokenizer
    return model.eval(), report


# How a training checkpoint holds its frozen SONAR decoder (REFERENCE.md §8): the reference wrapper's `sonar_decoder`
# is sonar-space's `EmbeddingToTextModelPipeline`, whose `.model` is `SonarEncoderDecoderModel(DummyEncoderModel(),
# decoder)`; a wrapper holding the decoder module itself gives the one-level layout.
DECODER_LAYOUTS = {
    "sonar_decoder.model.decoder.": "sonar-space pipeline (sonar_decoder.model.decoder.*)",
    "sonar_decoder.model.": "decoder model under `.model` (sonar_decoder.model.*)",
    "sonar_decoder.": "decoder module (sonar_decoder.*)",
}


def bundled_decoder_layout(state: dict) -> tuple[dict[str, torch.Tensor], str | None]:
    """-> (the checkpoint's own SONAR decoder in fairseq2 names, which layout held it), or ({}, None) if it holds none.

    The layout is the longest prefix under which every bundled key lies and fairseq2's output projection
    (`final_proj.weight`) is found."""
    bundled_keys = [k for k in state if k.startswith("sonar_decoder.")]
    if not bundled_keys:
        return {}, None
    for prefix, layout in DECODER_LAYOUTS.items():
        if all(k.startswith(prefix) for k in bundled_keys):
            inner = {k[len(prefix) :]: state[k] for k in bundled_keys}
            if "final_proj.weight" in inner:  # other keys are checked by the decoder's key table, by name
                return inner, layout
    return {k[len("sonar_decoder.") :]: state[k] for k in bundled_keys}, "unrecognised"


def bundled_decoder_state(state: dict) -> dict[str, torch.Tensor]:
    """The checkpoint's own SONAR decoder in fairseq2 names, or {} if it holds none."""
    return bundled_decoder_layout(state)[0]


def compare_bundled_decoder(state: dict, decoder) -> tuple[str, str]:
    """-> (status, description): the checkpoint's own decoder vs SONAR_DIR's. status: absent, identical, differs,
    not comparable. A difference names the largest one and its tensor; SONAR_DIR's dtype is the comparison's."""
    bundled, layout = bundled_decoder_layout(state)
    if not bundled:
        return "absent", "absent from the checkpoint (Hub layout)"
    if layout == "unrecognised":
        shown = ", ".join(f"sonar_decoder.{k}" for k in sorted(bundled)[:3])
        return "not comparable", (f"not comparable with SONAR_DIR's: its keys ({shown}, ...) are in no "
                                  f"known layout ({'; '.join(DECODER_LAYOUTS.values())})")  # fmt: skip
    try:
        mapped = convert_state(bundled, DECODER_KEY_MAPPING, "bundled SONAR decoder")
    except ConversionError as error:
        return "not comparable", f"not comparable with SONAR_DIR's: {error}"
    ours = decoder.state_dict()
    if set(mapped) != set(ours):
        only = sorted(set(mapped) ^ set(ours))
        return "differs", f"differs from SONAR_DIR's: other tensors ({len(only)} not in both, e.g. {only[0]})"
    shapes = [k for k in ours if tuple(mapped[k].shape) != tuple(ours[k].shape)]
    if shapes:
        k = shapes[0]
        there, here = tuple(mapped[k].shape), tuple(ours[k].shape)
        return "differs", f"differs from SONAR_DIR's: {k} is {there} in the checkpoint, {here} in SONAR_DIR"
    worst, where = 0.0, None
    for key, tensor in ours.items():
        difference = float((mapped[key].to(tensor.dtype).float() - tensor.float()).abs().max())
        if not difference <= worst:  # NaN counts as the largest difference, never as none
            worst, where = difference, key
        if difference != difference:
            break
    if where is None:
        return "identical", f"identical to SONAR_DIR's (layout: {layout})"
    return "differs", f"differs from SONAR_DIR's: largest difference {worst:.3g} in {where} (layout: {layout})"


def choose_decoder(state: dict, sonar_decoder, decoder: str = "check"):
    """-> (the SONAR decoder to convert, what the report and model card say about it)."""
    status, detail = compare_bundled_decoder(state, sonar_decoder)
    if status in ("absent", "identical"):
        if decoder == "checkpoint" and status == "absent":
            raise ConversionError("--keep-checkpoint-decoder: the checkpoint holds no SONAR decoder of its own.")
        return sonar_decoder, f"SONAR_DIR's; the checkpoint's own copy is {detail.split(' (')[0]}"
    if decoder == "check":
        raise ConversionError(
            f"The SONAR decoder saved in the checkpoint {detail}. Converting would pair the backbone with a decoder "
            "it was not trained with, or throw away a decoder trained with it. Pass --keep-checkpoint-decoder to "
            "convert the checkpoint's own decoder (e.g. trained with train_sonar_decoder), or --use-sonar-decoder "
            "if SONAR_DIR's decoder is knowingly the one to use."
        )
    if decoder == "sonar":
        return sonar_decoder, f"SONAR_DIR's, as asked (--use-sonar-decoder); the checkpoint's own copy {detail}"
    if status == "not comparable":
        raise ConversionError(
            f"--keep-checkpoint-decoder: the checkpoint's SONAR decoder cannot be converted ({detail})."
        )
    own = build_decoder(bundled_decoder_state(state), sonar_decoder.config.decoder_attention_heads)
    if own.config.d_model != sonar_decoder.config.d_model or own.config.vocab_size != sonar_decoder.config.vocab_size:
        raise ConversionError(
            f"--keep-checkpoint-decoder: the checkpoint's decoder (d {own.config.d_model}, vocabulary "
            f"{own.config.vocab_size}) does not fit SONAR_DIR's encoder and tokenizer (d "
            f"{sonar_decoder.config.d_model}, vocabulary {sonar_decoder.config.vocab_size})."
        )
    return own, f"the checkpoint's own (--keep-checkpoint-decoder); it {detail}"


def convert_sonar_llm(
    checkpoint,
    sonar_dir,
    output,
    config_json=None,
    preset: str | None = None,
    dtype: str | None = None,
    repo_id: str | None = None,
    add_begin: bool | None = None,
    decoder: str = "check",
    num_attention_heads: int | None = None,
    source: tuple[dict, dict | None] | None = None,
) -> dict:
    """Convert, write a Hub-ready folder (weights, config with auto_map, generation config, tokenizer, code, card),
    verify it against an independent build of the reference and by reloading. Publishing is conversion/publish.py's
    job."""
    from transformers import AutoModel

    from .checkpoints import parse_dtype
    from .model_card import build_model_card
    from .output import atomic_output_dir
    from .reference import verify_against_reference

    source = read_source(checkpoint) if source is None else source
    model, report = build_sonar_llm(checkpoint, sonar_dir, config_json=config_json, preset=preset, source=source,
                                    add_begin=add_begin, decoder=decoder,
                                    num_attention_heads=num_attention_heads)  # fmt: skip
    # 1. the converted model computes what the reference computes (fp32, before any cast)
    report["verification"] = verify_against_reference(model, source[0], report.pop("reference_llama_config"))
    torch_dtype = parse_dtype(dtype)
    if torch_dtype is not None:
        model.to(torch_dtype)
    # 2. write the folder atomically
    output = Path(output)
    name = repo_id or output.name
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("sonar_"))
    total = sum(p.numel() for p in model.parameters())
    probe = torch.randn(2, 5, model.config.embed_dim, generator=torch.Generator().manual_seed(0)) * 0.05
    with atomic_output_dir(output, kind="sonar_llm") as staging:
        model.save_pretrained(staging)
        model.tokenizer.save_pretrained(staging)
        card = build_model_card(name, report["preset"], model.config, source=f"`{Path(checkpoint).name}`",
                                dropped_parameters=report["dropped_parameters"], trainable=trainable, total=total,
                                decoder_note=report["decoder_copy"].replace("SONAR_DIR's", "the `--sonar` folder's"),
                                add_begin_source=_without_paths(report["add_begin_source"]),
                                config_source=_without_paths(report["config_source"]))  # fmt: skip
        card.save(staging / "README.md")
        # 3. reload what was written and check it reproduces the converted model exactly
        reloaded = AutoModel.from_pretrained(staging, dtype=model.dtype)
        with torch.no_grad():
            same = torch.equal(
                reloaded(probe.to(model.dtype)).predicted_embeddings, model(probe.to(model.dtype)).predicted_embeddings
            )
        if not same:
            raise ConversionError("The written folder does not reproduce the converted model.")
    report.update(output=str(output), trainable_parameters=trainable, total_parameters=total)
    return report


def _without_paths(text: str) -> str:
    """`--config /home/me/SonarLLM_900M.json` -> `--config SonarLLM_900M.json`: no local paths in a public card."""
    return re.sub(r"(--config )(\S+)", lambda m: m.group(1) + Path(m.group(2)).name, text)
