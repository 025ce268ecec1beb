"""Opt-in exact fp32 CPU inference with SONAR's layer weights pre-packed for oneDNN.

oneDNN multiplies by a plain (out, in) weight by repacking panels of it on every call; for the few rows of one
sentence (the encoder's 26 tokens, a beam of 5) that repacking is a large share of each product.
`pack_sonar(model)` replaces, in place, every linear layer of the SONAR encoder's and decoder's layers by one that
holds its weight only in oneDNN's blocked layout (`torch.ops.mkldnn._reorder_linear_weight`, the layout
torch.compile's CPU weight freezing uses): the plain copy is freed, so memory stays the same. The products are the
same fp32 sums in another order (a few ulps; tokens identical in tests/test_packing.py and in the benchmark).

For inference only: CPU, fp32, no gradients, and a packed model cannot be saved (save before packing, or load the
saved folder again). The tied vocabulary projection stays plain (its weight is also the token embedding table).
"""

from __future__ import annotations

import torch
from torch import nn

from .quantization import check_untransformed, sonar_parts

# The row count oneDNN's blocked layout is chosen for: a sentence's tokens, or a few beams of a few sentences.
PACKING_ROWS = 32


class PackedLinear(nn.Module):
    """`nn.Linear` for inference, with the weight in oneDNN's blocked layout (a buffer: it is not trainable)."""

    def __init__(self, layer: nn.Linear, rows: int = PACKING_ROWS):
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        packed = torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), rows)
        self.register_buffer("packed_weight", packed, persistent=False)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach(), persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and inputs.requires_grad:
            raise RuntimeError("A packed SONAR layer has no backward: train the unpacked model (load it again).")
        return torch.ops.mkldnn._linear_pointwise(inputs.contiguous(), self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for oneDNN"


def _pack_linears(module: nn.Module) -> int:
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, PackedLinear(child))
            count += 1
        else:
            count += _pack_linears(child)
    return count


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
        _pack_linears(part.encoder if hasattr(part, "encoder") else part.decoder)
        part.packed = "onednn"
        part.eval()
    return model


__all__ = ["pack_sonar", "PackedLinear"]
