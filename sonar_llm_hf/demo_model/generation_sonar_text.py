"""fairseq2's beam search for the SONAR decoder, restated so that beam outputs match the reference exactly.

transformers' beam search and fairseq2's `BeamSearchSeq2SeqGenerator` rank hypotheses differently:
- fairseq2 scores the forced prompt too: a hypothesis' score includes log p(lang | </s>), and is divided by the
  number of scored tokens (lang + text + `</s>`); transformers scores only generated tokens;
- fairseq2 takes the best 2 x beam candidates over all beams, accepts `</s>` only among the first `beam` of them,
  and closes an input once `beam` hypotheses ended; it forces `</s>` at the last position.
Those differences re-rank hypotheses of different lengths, so SONAR's decoder uses this search by default
(`SonarTextDecoder.decode(..., beam_search="fairseq2")`); transformers' `generate` stays available.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, EncoderDecoderCache


@torch.no_grad()
def fairseq2_beam_search(
    decoder,
    embeddings: torch.Tensor,
    prompt: torch.LongTensor,
    beam_size: int = 5,
    max_length: int = 512,
    len_penalty: float = 1.0,
    unk_penalty: float = 0.0,
    suppress_ids: list[int] | None = None,
) -> tuple[list[list[int]], list[float]]:
    """Best hypothesis per input: generated ids after `prompt` (ending with `</s>`) and its score.

    `decoder` is a `SonarTextDecoder`; `embeddings` (N, d); `prompt` (N, P), `[</s>, lang]` per row.
    """
    config = decoder.config
    eos, unk = config.eos_token_id, 3
    num_inputs, prompt_len = prompt.shape
    max_seq_len = min(max_length, config.max_position_embeddings)
    if prompt_len >= max_seq_len:
        raise ValueError(f"`max_length` ({max_length}) must exceed the prompt length ({prompt_len}).")
    device = embeddings.device
    # fairseq2 never allows padding; we also block ids the tokenizer cannot decode. One additive mask, built once.
    blocked = torch.zeros(config.vocab_size, dtype=torch.float32, device=device)
    blocked[sorted(set(suppress_ids or []) | {config.pad_token_id})] = -torch.inf

    seqs = torch.zeros(num_inputs, max_seq_len, dtype=torch.long, device=device)
    seqs[:, :prompt_len] = prompt
    step_scores = torch.zeros(num_inputs, max_seq_len, dtype=torch.float32, device=device)
    memory = embeddings.unsqueeze(1)  # (N, 1, d)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())

    def next_log_probs(tokens: torch.LongTensor) -> torch.Tensor:
        logits = decoder(decoder_input_ids=tokens, encoder_outputs=(memory,), cache=cache, use_cache=True).logits
        return torch.log_softmax(logits.float(), dim=-1)  # (rows, T, V)

    # 1. prefill: score the forced prompt tokens (fairseq2 counts log p(lang | </s>) in every hypothesis)
    lprobs = next_log_probs(seqs[:, : prompt_len - 1])
    scores = lprobs.gather(-1, seqs[:, 1:prompt_len].unsqueeze(-1)).squeeze(-1).cumsum(-1)
    step_scores[:, 1:prompt_len] = scores

    beam_sizes = [1] * num_inputs
    input_index = torch.arange(num_inputs, device=device)  # which input each row belongs to
    finished: list[list[tuple[torch.Tensor, list[int]]]] = [[] for _ in range(num_inputs)]
    for step in range(prompt_len, max_seq_len):
        # 2. next-token log-probs with fairseq2's constraints
        lprobs = next_log_probs(seqs[:, step - 1 : step])[:, -1]  # (rows, V)
        if step == max_seq_len - 1:
            forced = torch.full_like(lprobs, -torch.inf)
            forced[:, eos] = lprobs[:, eos]
            lprobs = forced
        else:
            lprobs[:, unk] -= unk_penalty
            lprobs = lprobs + blocked
        # 3. per input: best 2 x beam candidates; `</s>` among the first `beam` ends a hypothesis
        keep_rows, keep_tokens, keep_scores, new_sizes = [], [], [], []
        offset = 0
        for size in beam_sizes:
            rows = slice(offset, offset + size)
            candidates = (lprobs[rows] + step_scores[rows, step - 1].unsqueeze(-1)).view(-1)
            top_scores, top_index = torch.topk(candidates, k=min(2 * beam_size, candidates.numel()))
            vocab = lprobs.shape[-1]
            row_index, token = top_index // vocab + offset, top_index % vocab
            offset += size
            is_eos = token == eos
            done = False
            for j in torch.nonzero(is_eos[:beam_size]).flatten().tolist():
                row = int(row_index[j])
                length = step + 1
                score = top_scores[j] / (length - 1) ** len_penalty
                tokens = [*seqs[row, prompt_len:step].tolist(), eos]
                owner = int(input_index[row])
                finished[owner].append((score, tokens))
                if len(finished[owner]) == beam_size:
                    done = True
                    break
            if done:
                continue
            alive = ~is_eos
            row_index, token, top_scores = row_index[alive][:beam_size], token[alive][:beam_size], top_scores[alive][:beam_size]
            keep_rows.append(row_index)
            keep_tokens.append(token)
            keep_scores.append(top_scores)
            new_sizes.append(len(row_index))
        if not new_sizes:
            break
        # 4. keep the surviving rows (reordering the cache), then record this step
        order = torch.cat(keep_rows)
        cache.reorder_cache(order)
        memory = memory.index_select(0, order)
        seqs = seqs.index_select(0, order)
        step_scores = step_scores.index_select(0, order)
        input_index = input_index.index_select(0, order)
        seqs[:, step] = torch.cat(keep_tokens)
        step_scores[:, step] = torch.cat(keep_scores)
        beam_sizes = new_sizes

    best_tokens, best_scores = [], []
    for hypotheses in finished:
        hypotheses.sort(key=lambda h: float(h[0]), reverse=True)  # stable, as fairseq2's list.sort
        best_tokens.append(hypotheses[0][1])
        best_scores.append(float(hypotheses[0][0]))
    return best_tokens, best_scores


__all__ = ["fairseq2_beam_search"]
