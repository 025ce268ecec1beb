"""Optional speed paths for SONAR inference, all in one place, none of them in the Hub's remote code (`models/`).

One entry point, `prepare_for_inference(model, kernels=...)`, which the CLI and the benchmarks call:

- `"plain"`: eval mode only; transformers' own kernels (what remote-code users get);
- `"onednn"`: fp32 CPU products through oneDNN (`onednn.py`; exact to a few ulps) and encoder batches that skip their
  padding (`padding_free.py`; exact to float rounding, any device);
- `"packed"` (the default): as `"onednn"`, with SONAR's layer weights pre-packed in oneDNN's blocked layout
  (`packing.py`; exact, same memory, cannot be saved until `unpack_sonar`);
- `"int8"`: dynamically quantized int8 SONAR layers (`quantization.py`; approximate, about 2x faster on CPU).

Where a path does not apply (not fp32, not CPU, no oneDNN in this torch build) it is skipped, never forced: a bf16 or
GPU model gets padding-free encoding only.
"""

from __future__ import annotations

from torch import nn

from .onednn import onednn_applies, restore_linears, use_onednn_linears
from .packing import PackedLinear, pack_sonar, unpack_sonar
from .padding_free import restore_encoding, use_padding_free_encoding
from .quantization import Int8VocabularyProjection, quantize_sonar, sonar_parts

KERNELS = ("plain", "onednn", "packed", "int8")


def prepare_for_inference(model: nn.Module, kernels: str = "packed") -> nn.Module:
    """`model` (a SONAR encoder or decoder, or a SONAR-LLM) in eval mode with the chosen speed path applied to its
    SONAR parts, in place; returns it. A command that only generates never trains or saves the model, which is all
    that `"packed"` and `"int8"` give up (see the module docstring)."""
    if kernels not in KERNELS:
        raise ValueError(f"`kernels` must be one of {', '.join(KERNELS)}; got {kernels!r}.")
    model.eval()
    if kernels == "plain":
        return model
    parts = sonar_parts(model, "prepare_for_inference")
    if kernels == "int8":
        quantize_sonar(model)
    elif kernels == "packed" and onednn_applies(model):
        pack_sonar(model)
    for part in parts:
        if kernels != "int8" and onednn_applies(part):
            use_onednn_linears(part)
        if hasattr(part, "encoder"):
            use_padding_free_encoding(part)
    return model


def restore_plain_kernels(model: nn.Module) -> nn.Module:
    """Undo `"onednn"` and `"packed"` in place (int8 is lossy: load the model again instead); returns it."""
    parts = sonar_parts(model, "restore_plain_kernels")
    if any(getattr(part, "quantized", None) for part in parts):
        raise ValueError("An int8 model cannot be restored (quantization lost precision): load the folder again.")
    if any(getattr(part, "packed", None) for part in parts):
        unpack_sonar(model)
    for part in parts:
        restore_linears(part)
        restore_encoding(part)
    return model


__all__ = [
    "KERNELS",
    "prepare_for_inference",
    "restore_plain_kernels",
    "pack_sonar",
    "unpack_sonar",
    "quantize_sonar",
    "PackedLinear",
    "Int8VocabularyProjection",
    "onednn_applies",
]
