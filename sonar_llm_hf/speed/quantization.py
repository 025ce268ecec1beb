"""Opt-in int8 CPU inference for the SONAR encoder and decoder: faster, and approximate.

`quantize_sonar(model)` replaces, in place, every linear layer of a `SonarTextEncoder`, a `SonarTextDecoder`, or
both inside a SONAR-LLM, by torch's dynamically quantized linear layer (int8 weights per output channel,
activations quantized per call; `torch.ao.nn.quantized.dynamic.Linear`, fbgemm/oneDNN kernels). The decoder's
256k-vocabulary projection is quantized the same way in row chunks, so that beam search still scores the
vocabulary chunk by chunk while each chunk's logits are in cache (`models/generation_sonar_text.py`).

Why this route (measured on a 2-core AMD EPYC, AVX2, fp32 baseline = oneDNN's fp32 inner product, see
BENCHMARKS.md): torch's dynamic int8 linear was 1.7-2.5x faster at the decoder's and encoder's shapes; torchao 0.18's
eager int8 configs (`Int8DynamicActivationInt8WeightConfig`, `Int8WeightOnlyConfig`) were 4-30x *slower* than fp32
on this CPU (they need `torch.compile` to be fast), and oneDNN's own int8 ops are private. torch marks the eager
`torch.ao.quantization` API as deprecated in favour of torchao, so this module only uses the quantized module class
and its `from_float`, and will move to torchao once its CPU path is fast without compilation.

Approximate: the products are int8, so logits and embeddings differ from fp32 by about 1% and beam search can pick
another sentence where two candidates are close; activation scales are taken per call, so a row's result also
depends on the other rows of its batch. Measured on the packaged demo model: see tests/test_quantization_sonar.py.
The weights stay fp32 in saved folders: quantize after loading, for inference only (no gradients, CPU only).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..models.generation_sonar_text import VOCAB_CHUNK  # rows per quantized chunk: the fp32 beam search's chunks


def _quantized_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
    from torch.ao.quantization import per_channel_dynamic_qconfig

    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    layer.qconfig = per_channel_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; the kernels themselves are maintained
        return DynamicQuantizedLinear.from_float(layer)


class Int8VocabularyProjection(nn.Module):
    """The tied LM head as int8 chunks of `chunk` rows: `forward` gives all logits, `vocab_chunks` one chunk at a
    time."""

    def __init__(self, weight: torch.Tensor, chunk: int = VOCAB_CHUNK):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.starts = list(range(0, weight.shape[0], chunk))
        self.chunks = nn.ModuleList(_quantized_linear(weight[start : start + chunk], None) for start in self.starts)

    def vocab_chunks(self):
        """(first row, layer) pairs: `layer(hidden)` gives the logits of rows first .. first + its width."""
        return zip(self.starts, self.chunks)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([layer(hidden) for layer in self.chunks], dim=-1)


def swap_layers(module: nn.Module, kind: type, swap) -> None:
    """Replace, in place, every submodule of type `kind` below `module` by `swap(submodule)`."""
    for name, child in list(module.named_children()):
        if isinstance(child, kind):
            setattr(module, name, swap(child))
        else:
            swap_layers(child, kind, swap)


def _quantized_copy(layer: nn.Linear) -> nn.Module:
    return _quantized_linear(layer.weight.detach(), None if layer.bias is None else layer.bias.detach())


def layer_stack(part: nn.Module) -> nn.Module:
    """The M2M100 layer stack of a SONAR encoder or decoder (not the decoder's tied vocabulary projection)."""
    return part.encoder if hasattr(part, "encoder") else part.decoder


def sonar_parts(model: nn.Module, caller: str = "quantize_sonar") -> list[nn.Module]:
    """The SONAR encoder and/or decoder that `model` is or holds."""
    from ..models.modeling_sonar_text import SonarTextDecoder, SonarTextEncoder

    if isinstance(model, (SonarTextEncoder, SonarTextDecoder)):
        return [model]
    parts = [
        m for m in (getattr(model, "sonar_encoder", None), getattr(model, "sonar_decoder", None)) if m is not None
    ]
    if not parts:
        raise TypeError(
            f"{caller} takes a SonarTextEncoder, a SonarTextDecoder or a SONAR-LLM, got {type(model).__name__}."
        )
    return parts


def check_untransformed(part: nn.Module, what: str) -> None:
    """Refuse a second inference transform, and weights that are not fp32 on CPU."""
    for attribute in ("quantized", "packed"):
        if getattr(part, attribute, None):
            raise ValueError(f"This {type(part).__name__} is already {attribute} ({getattr(part, attribute)}).")
    weight = next(part.parameters())
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        raise ValueError(
            f"{what} SONAR runs on CPU from fp32 weights; this {type(part).__name__} is {weight.dtype} on "
            f"{weight.device}. Load it in fp32 on CPU first."
        )


@torch.no_grad()
def quantize_sonar(model: nn.Module, dtype: str = "int8") -> nn.Module:
    """Quantize a SONAR encoder/decoder (or both inside a SONAR-LLM) to int8 in place, for CPU inference; returns it.

    Approximate (see the module docstring). The backbone of a SONAR-LLM is left in its own precision. Refuses
    models on other devices or in other dtypes than fp32, and models already quantized.
    """
    if dtype != "int8":
        raise ValueError(f"Only dtype='int8' is supported, got {dtype!r}.")
    if (
        "fbgemm" not in torch.backends.quantized.supported_engines
        and "x86" not in torch.backends.quantized.supported_engines
    ):
        raise RuntimeError(
            "This torch build has no x86 quantized kernels (fbgemm); int8 SONAR needs an x86 CPU build."
        )
    parts = sonar_parts(model)
    for part in parts:
        check_untransformed(part, "int8")
    for part in parts:
        if hasattr(part, "lm_head"):
            part.lm_head = Int8VocabularyProjection(
                part.lm_head.weight.detach()
            )  # the fp32 embedding stays for lookups
        swap_layers(layer_stack(part), nn.Linear, _quantized_copy)
        part.quantized = dtype
        part.eval()
    return model


__all__ = ["quantize_sonar", "Int8VocabularyProjection"]
