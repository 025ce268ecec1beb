"""oneDNN matrix products for CPU inference of SONAR.

Beam search multiplies few rows (beams x sentences) by large weights. For such shapes torch's default fp32 CPU path
(`F.linear` -> BLAS sgemm) reaches only about half of what oneDNN's inner-product kernel does on the same cores
(BENCHMARKS.md). `use_onednn_linears(part)` routes every `nn.Linear` of a SONAR encoder or decoder, and the decoder's
chunked vocabulary projection, through oneDNN for tensors that need no gradient. The products are the same fp32 sums
in another order (differences of a few ulps). The kernel is a private torch op, which is why this lives here, outside
the Hub's remote code (`models/`), and is applied only on request (`sonar_llm_hf.speed.prepare_for_inference`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.generation_sonar_text import VOCAB_CHUNK


def onednn_op():
    """torch's oneDNN linear kernel, or None where this build or CPU lacks it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() else None


def onednn_applies(module: nn.Module) -> bool:
    """oneDNN helps fp32 CPU weights; other devices and dtypes keep their usual kernels."""
    weight = next((p for p in module.parameters()), None)
    return (
        weight is not None
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and onednn_op() is not None
    )


def onednn_linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear` through oneDNN where no gradient is needed (the op has no backward)."""
    if torch.is_grad_enabled() and (inputs.requires_grad or weight.requires_grad):
        return nn.functional.linear(inputs, weight, bias)
    return onednn_op()(inputs, weight, bias, "none", [], "")


def _linear_forward(layer: nn.Linear):
    return lambda inputs: onednn_linear(inputs, layer.weight, layer.bias)


def _vocab_chunks(layer: nn.Linear):
    weight = layer.weight
    return lambda: ((start, lambda h, w=weight[start : start + VOCAB_CHUNK]: onednn_linear(h, w))
                    for start in range(0, weight.shape[0], VOCAB_CHUNK))  # fmt: skip


def use_onednn_linears(part: nn.Module) -> int:
    """Route `part`'s plain `nn.Linear` layers (and a decoder's vocabulary chunks) through oneDNN, in place; returns
    how many layers. Instance attributes shadow `nn.Linear.forward`, so `restore_linears` undoes it exactly."""
    linears = [m for m in part.modules() if type(m) is nn.Linear and "forward" not in m.__dict__]
    for layer in linears:
        layer.forward = _linear_forward(layer)
    head = getattr(part, "lm_head", None)
    if type(head) is nn.Linear:
        head.vocab_chunks = _vocab_chunks(head)  # read by the beam search's `vocab_chunks`
    return len(linears)


def restore_linears(part: nn.Module) -> None:
    """Undo `use_onednn_linears`: every layer back on `nn.Linear.forward`."""
    for module in part.modules():
        for name in ("forward", "vocab_chunks"):
            if type(module) is nn.Linear and name in module.__dict__:
                delattr(module, name)


__all__ = ["onednn_applies", "onednn_linear", "use_onednn_linears", "restore_linears"]
