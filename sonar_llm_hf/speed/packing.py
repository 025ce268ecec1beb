"""Opt-in exact fp32 CPU inference with SONAR's layer weights pre-packed for oneDNN.

oneDNN multiplies by a plain (out, in) weight by repacking panels of it on every call; for the few rows of one
sentence (the encoder's 26 tokens, a beam of 5) that repacking is a large share of each product.
`pack_sonar(model)` replaces, in place, every linear layer of the SONAR encoder's and decoder's layers by one that
holds its weight only in oneDNN's blocked layout (`torch.ops.mkldnn._reorder_linear_weight`, the layout
torch.compile's CPU weight freezing uses): the plain copy is freed, so memory stays the same. The products are the
same fp32 sums in another order (a few ulps; tokens identical in tests/test_packing.py and in the benchmark).

For inference only: CPU, fp32, no gradients, and a packed model cannot be saved; `unpack_sonar(model)` gives the
plain layers back, bit for bit, to train or save it. The tied vocabulary projection stays plain (its weight is also
the token embedding table).
"""

from __future__ import annotations

import torch
from torch import nn

from .quantization import check_untransformed, layer_stack, sonar_parts, swap_layers

# The row count oneDNN's blocked layout is chosen for: a sentence's tokens, or a few beams of a few sentences.
PACKING_ROWS = 32


class PackedLinear(nn.Module):
    """`nn.Linear` for inference, with the weight in oneDNN's blocked layout (a buffer: it is not trainable)."""

    def __init__(self, layer: nn.Linear, rows: int = PACKING_ROWS):
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.trainable = layer.weight.requires_grad  # restored by `unpacked` (SONAR is frozen inside a SONAR-LLM)
        packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), rows)
        self.register_buffer("packed_weight", packed, persistent=False)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach(), persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and inputs.requires_grad:
            raise RuntimeError("A packed SONAR layer has no backward: `unpack_sonar(model)` first to train it.")
        return torch.ops.mkldnn._linear_pointwise(inputs.contiguous(), self.packed_weight, self.bias, "none", [], "")

    def unpacked(self) -> nn.Linear:
        """The plain `nn.Linear` again, with the very same weights (oneDNN's reorder is a permutation)."""
        layer = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        layer.weight = nn.Parameter(self.packed_weight.to_dense(), requires_grad=self.trainable)
        if self.bias is not None:
            layer.bias = nn.Parameter(self.bias.clone(), requires_grad=self.trainable)
        return layer

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


@torch.no_grad()
def pack_sonar(model: nn.Module) -> nn.Module:
    """Pack the layer weights of a SONAR encoder/decoder (or both inside a SONAR-LLM) for oneDNN, in place; returns
    it. Exact fp32, same memory; inference only (see the module docstring). Refuses models on other devices or in
    other dtypes than fp32, and models already packed or quantized."""
    if not torch.backends.mkldnn.is_available():
        raise RuntimeError("This torch build has no oneDNN (mkldnn) CPU kernels; pack_sonar needs them.")
    parts = sonar_parts(model, "pack_sonar")
    for part in parts:
        check_untransformed(part, "packing")
    for part in parts:
        swap_layers(layer_stack(part), nn.Linear, PackedLinear)
        part.packed = "onednn"
        part.eval()
    return model


@torch.no_grad()
def unpack_sonar(model: nn.Module) -> nn.Module:
    """Undo `pack_sonar` in place: plain `nn.Linear` layers with the same weights, trainable and savable again."""
    parts = sonar_parts(model, "unpack_sonar")
    if not any(getattr(part, "packed", None) for part in parts):
        raise ValueError("This model is not packed: there is nothing to unpack (pack_sonar(model) packs it).")
    for part in parts:
        if getattr(part, "packed", None):
            swap_layers(layer_stack(part), PackedLinear, PackedLinear.unpacked)
            part.packed = None
    return model


__all__ = ["pack_sonar", "unpack_sonar", "PackedLinear"]
