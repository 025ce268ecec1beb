"""SONAR-LLM's training loss: token cross-entropy over SONAR's 256k vocabulary without materialising the logits.

It lives apart from the SONAR modules because only SONAR-LLM trains through the decoder this way; the decoder's own
`forward(labels=...)` keeps transformers' plain cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed CE of `hidden @ weight.T` against `labels`, with its gradients computed during the forward pass.

    Each chunk's logits exist only while that chunk is scored: the loss and `d loss / d logits = softmax - onehot`
    are taken from them at once and projected back through `weight`, so backward only scales stored gradients.
    That is one vocabulary-sized product fewer than recomputing the logits in backward.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_size):
        total = hidden.new_zeros((), dtype=torch.float32)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
        for start in range(0, labels.shape[0], chunk_size):
            h, y = hidden[start : start + chunk_size], labels[start : start + chunk_size]
            logits = nn.functional.linear(h, weight).float()  # (chunk, V)
            rows = torch.arange(len(y), device=y.device)
            lse = torch.logsumexp(logits, dim=-1)
            total = total + (lse - logits[rows, y]).sum()
            if need_hidden or need_weight:
                probs = logits.sub_(lse.unsqueeze(-1)).exp_()  # softmax, in place of the logits
                probs[rows, y] -= 1
                probs = probs.to(weight.dtype)
                if need_hidden:
                    grad_hidden[start : start + chunk_size] = probs @ weight
                if need_weight:
                    grad_weight += (probs.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_output).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None


def chunked_token_cross_entropy(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token cross-entropy and target count without materialising (tokens, vocab) logits.

    SONAR's vocabulary has 256,206 rows, so full logits for a training batch take gigabytes. Each chunk of rows is
    projected, scored and discarded; under autograd its gradients are taken in the same pass (`_LinearCrossEntropy`),
    so peak memory holds one chunk of logits. Rows whose label is -100 are skipped entirely.
    """
    hidden_states = hidden_states.reshape(-1, hidden_states.shape[-1])  # (N*L, d)
    labels = labels.reshape(-1)  # (N*L,)
    keep = labels != -100
    hidden_states, labels = hidden_states[keep], labels[keep]
    count = keep.sum()
    needs_grad = torch.is_grad_enabled() and (hidden_states.requires_grad or lm_head_weight.requires_grad)
    if needs_grad:
        return _LinearCrossEntropy.apply(hidden_states, lm_head_weight, labels, chunk_size), count
    total = hidden_states.new_zeros((), dtype=torch.float32)
    for start in range(0, labels.shape[0], chunk_size):
        logits = nn.functional.linear(hidden_states[start : start + chunk_size], lm_head_weight).float()
        total = total + nn.functional.cross_entropy(logits, labels[start : start + chunk_size], reduction="sum")
    return total, count


__all__ = ["chunked_token_cross_entropy"]
