"""Length-bucketed encoding capped by tokens (SONAR issue #40's `batch_max_tokens`), in the input's order.

Sentences are sorted by token length, longest first, and cut into batches whose padded size (rows x longest row)
stays within `max_tokens`: short sentences travel many to a batch, long ones few, and padding stays small. The
embeddings are written back at each sentence's original index, so the result is in input order. Batches depend only
on the lengths and `max_tokens`, so the same sentences give the same batches (and bytes) in any process.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def token_buckets(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of at most `max_tokens` padded tokens (a longer single row goes alone)."""
    if max_tokens < 1:
        raise ValueError(f"`max_tokens` must be a positive number of tokens per batch, got {max_tokens}.")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))  # stable: ties keep input order
    batches, current = [], []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]  # the first row of a batch is its longest
        if current and (len(current) + 1) * width > max_tokens:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def encode_bucketed(
    encoder, token_ids: Sequence[Sequence[int]], max_tokens: int, on_batch: Callable[[int], None] | None = None
) -> torch.Tensor:
    """(N, d) embeddings of already tokenized sentences, batched by `token_buckets`, in input order.

    Each batch goes through `SonarTextEncoder.encode_token_ids` (padding-free and oneDNN after
    `sonar_llm_hf.speed.prepare_for_inference`, as `embed` runs it).
    `on_batch(rows)` is called after each batch (the progress bar)."""
    result = torch.empty(len(token_ids), encoder.config.d_model, dtype=encoder.dtype)
    for batch in token_buckets([len(ids) for ids in token_ids], max_tokens):
        rows = encoder.encode_token_ids([token_ids[i] for i in batch], batch_size=len(batch), progress_bar=False)
        result[torch.tensor(batch)] = rows.cpu()
        if on_batch is not None:
            on_batch(len(batch))
    return result


__all__ = ["encode_bucketed", "token_buckets"]
