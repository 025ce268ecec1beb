"""oneDNN matrix products for CPU inference of the SONAR decoder.

Beam search multiplies few rows (beams x sentences) by large weights. For such shapes torch's default fp32 CPU path
(`F.linear` -> BLAS sgemm) reaches only about half of what oneDNN's inner-product kernel does on the same cores
(measured in `benchmarks/bench_generate.py`). `onednn_linears(module)` routes every `nn.Linear` of `module` through
oneDNN while it is active, for tensors that need no gradient. The products are the same fp32 sums in another order
(differences of a few ulps). The kernel is a private torch op: where it is missing, `F.linear` stays in use.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn


def _onednn_op():
    try:
        op = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() else None


def onednn_applies(module: nn.Module) -> bool:
    """oneDNN helps fp32 CPU weights; other devices and dtypes keep their usual kernels."""
    weight = next((p for p in module.parameters()), None)
    return weight is not None and weight.device.type == "cpu" and weight.dtype == torch.float32 and _onednn_op() is not None


def _linear_forward(layer: nn.Linear, op):
    weight, bias = layer.weight, layer.bias

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (inputs.requires_grad or weight.requires_grad):
            return nn.functional.linear(inputs, weight, bias)  # the op has no backward
        return op(inputs, weight, bias, "none", [], "")

    return forward


_active = ContextVar("onednn_linears_active", default=False)


def linear(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, through oneDNN inside an active `onednn_linears` context (for products outside any module)."""
    op = _onednn_op() if _active.get() else None
    if op is None or torch.is_grad_enabled() or weight.device.type != "cpu" or weight.dtype != torch.float32:
        return nn.functional.linear(inputs, weight, bias)
    return op(inputs, weight, bias, "none", [], "")


@contextmanager
def onednn_linears(module: nn.Module, enabled: bool = True):
    """While active, `module`'s `nn.Linear` layers multiply with oneDNN (CPU, fp32, no gradient); else a no-op."""
    op = _onednn_op()
    if not enabled or not onednn_applies(module):
        yield
        return
    token = _active.set(True)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear) and "forward" not in m.__dict__]
    for layer in linears:
        layer.forward = _linear_forward(layer, op)  # an instance attribute shadows nn.Linear.forward
    try:
        yield
    finally:
        _active.reset(token)
        for layer in linears:
            del layer.forward
