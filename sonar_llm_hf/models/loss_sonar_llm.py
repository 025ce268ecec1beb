"""SONAR-LLM's training loss: token cross-entropy over SONAR's 256k vocabulary without materialising the logits, and
the one counting rule that keeps every loss type exact under `Trainer`.

It lives apart from the SONAR modules because only SONAR-LLM trains through the decoder this way; the decoder's own
`forward(labels=...)` keeps transformers' plain cross-entropy.

Counting rule. `Trainer` divides the loss by `num_items_in_batch`, its count of `labels != -100` over all the
micro-batches of one optimizer step on all devices. Every loss type is therefore a sum over target tokens divided by
that count: the cross-entropy of each token, and the MSE of each predicted sentence once per target token of it. A sum
over the same items on every micro-batch, divided by their global count, is what one large batch gives, so gradient
accumulation and data parallelism are exact. It holds only if every label that is not -100 is an item the model
scores; `check_countable_labels` refuses labels for which it does not (sentence 0, padded sentences, ...).
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


def last_label_end(token_labels: torch.Tensor) -> torch.Tensor:
    """(N, L) -> (N,): one past each row's last label. A target ends there, also when an interior label is -100 (a
    token left out of the loss still sits in the sentence), so counting the labels would cut its end off."""
    if token_labels.shape[-1] == 0:
        return torch.zeros(token_labels.shape[:-1], dtype=torch.long, device=token_labels.device)
    positions = torch.arange(1, token_labels.shape[-1] + 1, device=token_labels.device)
    return ((token_labels != -100) * positions).amax(dim=-1)


def append_eos_target(token_labels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Add the reference script's extra `</s>` target after each sentence's `</s>` (its teacher-forcing quirk).

    Rows (left-aligned, padded with -100) that already end in `</s> </s>` are left as they are: the collator may have
    written the extra target already (`SonarLLMDataCollator.for_model`), so that `Trainer` counts it.
    """
    lengths = last_label_end(token_labels)  # (N,)
    rows = torch.arange(token_labels.shape[0], device=token_labels.device)
    last = token_labels[rows, (lengths - 1).clamp(min=0)]
    before = token_labels[rows, (lengths - 2).clamp(min=0)]
    done = (lengths >= 2) & (last == eos_id) & (before == eos_id)
    extra = torch.full_like(token_labels[:, :1], -100)
    token_labels = torch.cat([token_labels, extra], dim=1)
    add = ~done & (lengths > 0)
    token_labels[rows[add], lengths[add]] = eos_id
    return token_labels


def check_countable_labels(labels, attention_mask, num_items, appended: int = 0, per_sentence: bool = False) -> None:
    """Refuse labels for which `Trainer`'s count (`labels != -100`) is not the number of items the model scores.

    `num_items` is what the model sums over in this micro-batch; `appended` how many of them are not in `labels`
    (the duplicated `</s>` targets); `per_sentence`: the items are target sentences (`loss_type="mse"`). Equal counts
    on every micro-batch make the global counts equal too.
    """
    counted = labels.ne(-100).sum()
    if int(counted) == int(num_items):
        return
    if per_sentence and labels.shape[-1] > 1:
        raise ValueError(
            f"`num_items_in_batch` (passed by Trainer) counts every label != -100: {int(counted)} in this batch, but "
            f"loss_type='mse' scores each of its {int(num_items)} target sentences once (the plain mean over "
            "sentences), so the loss would be divided by the wrong count. Collate with "
            "`SonarLLMDataCollator.for_model(model)`, which keeps one label per target sentence for this loss type."
        )
    first = int(labels[:, 0].ne(-100).sum())
    padded = 0
    if attention_mask is not None:
        padded = int(labels[:, 1:][~attention_mask[:, 1:].bool().to(labels.device)].ne(-100).sum())
    reasons = []
    if first:
        reasons.append(f"labels[:, 0] holds {first} (sentence 0 is never a target: position t-1 predicts sentence t)")
    if padded:
        reasons.append(f"{padded} sit at padded sentences (attention_mask 0)")
    if appended:
        reasons.append(f"duplicate_final_eos_target adds {appended} `</s>` targets that are not in the labels")
    fixes = "set those labels to -100, as `SonarLLMDataCollator` does"
    if appended:
        fixes += ", and collate with `SonarLLMDataCollator.for_model(model)`, which writes the extra `</s>` targets"
    raise ValueError(
        f"`num_items_in_batch` (passed by Trainer) counts every label != -100: {int(counted)} in this batch, but the "
        f"model scores {int(num_items)} target tokens: {'; '.join(reasons) or 'the counts differ'}. The loss would be "
        f"divided by the wrong count (a silently smaller or larger learning rate). Fix: {fixes}."
    )


def token_weighted_squared_error(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Sum over sentences of `weights` x the mean squared error of the sentence's embedding (over its d dims), fp32."""
    per_sentence = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (N,)
    return (per_sentence * weights.to(per_sentence)).sum()


__all__ = ["chunked_token_cross_entropy", "append_eos_target", "check_countable_labels",
           "token_weighted_squared_error", "last_label_end"]  # fmt: skip
