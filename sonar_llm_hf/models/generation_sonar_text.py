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
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache

from .onednn_linear import linear
from .validation_sonar import check_decoder_positions

# Vocabulary rows projected at a time when scoring a step: a chunk of logits for 80 hypotheses (5 MB) stays in cache
# while it is reduced, instead of writing and re-reading 80 MB of logits.
VOCAB_CHUNK = 16384

# Shifted logits are raised to this floor before `exp`. torch's vectorised CPU `exp` takes a slow path, 10-40x
# slower, for inputs below log(FLT_MIN) = -87.34 (results subnormal or zero), so every id of a step whose logits span
# more than 87 would pay it; `log_softmax`, fairseq2's route, has no such path. exp(-87) = 1.6e-38: even all 256k
# terms add < 5e-33 to a sum that is at least 1 (the largest term), so the fp32 sum is the same.
EXP_FLOOR = -87.0


class SpareBuffers:
    """The one spare (keys, values) pair per device that all layers of a search take turns with: a layer gathers its
    reordered beams into it and leaves its old pair as the spare of the next layer. A search so holds one spare pair,
    not one per layer: half the cache's memory, and half the fresh pages to fault in."""

    def __init__(self):
        self.pairs: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def take(self, like: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs.pop(like[0].device, None)
        if pair is None or pair[0].shape != like[0].shape:  # the first reorder, or the cache grew
            pair = tuple(buffer.new_empty(buffer.shape) for buffer in like)
        return pair

    def give(self, pair: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.pairs[pair[0].device] = pair


class BeamSearchCacheLayer(DynamicLayer):
    """Self-attention keys and values in buffers allocated for the search's largest beam, written in place.

    A `DynamicLayer` concatenates on every step and gathers beams into fresh tensors; at SONAR's size both cost
    more than the attention itself (fresh memory is page-faulted in). Here a step writes in place, and a beam reorder
    gathers the filled positions of each row into the search's spare pair (`SpareBuffers`), which then becomes the
    live one. The buffers hold `rows` (inputs x beam) from the start and grow by doubling up to `max_length`
    positions, so a search allocates once or twice instead of on every change of shape.
    """

    initial_capacity = 32  # positions: most SONAR sentences fit, so most searches never grow

    def __init__(self, rows: int, max_length: int, spares: SpareBuffers):
        super().__init__()
        self.max_rows, self.max_length, self.spares = rows, max_length, spares

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length, self.rows, self.buffers = 0, key_states.shape[0], None

    def _filled(self, buffer: torch.Tensor, rows: int) -> torch.Tensor:
        return buffer[:rows, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[2]
        capacity = self.buffers[0].shape[2] if self.buffers else 0
        if end > capacity:
            capacity = min(max(end, 2 * capacity or self.initial_capacity), max(end, self.max_length))
            shape = (max(self.max_rows, self.rows), key_states.shape[1], capacity, key_states.shape[3])
            buffers = (key_states.new_empty(shape), value_states.new_empty(shape))
            if self.length:
                for new, old in zip(buffers, self.buffers):
                    self._filled(new, self.rows).copy_(self._filled(old, self.rows))
            self.buffers = buffers
        for buffer, states in zip(self.buffers, (key_states, value_states)):
            buffer[: self.rows, :, self.length : end] = states
        self.length = end
        self.keys, self.values = (self._filled(buffer, self.rows) for buffer in self.buffers)
        return self.keys, self.values

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if not self.length:
            return
        rows = beam_idx.shape[0]  # at most `max_rows`: the search never keeps more than beam rows per input
        beam_idx = beam_idx.to(self.keys.device)  # `device_map` may put this layer on another device
        reordered = self.spares.take(self.buffers)
        for live, spare in zip(self.buffers, reordered):  # only the filled positions, gathered in place
            torch.index_select(self._filled(live, self.rows), 0, beam_idx, out=self._filled(spare, rows))
        self.spares.give(self.buffers)
        self.buffers, self.rows = reordered, rows
        self.keys, self.values = (self._filled(buffer, rows) for buffer in self.buffers)


def vocab_chunks(lm_head):
    """(first id, function) pairs projecting hidden states onto VOCAB_CHUNK rows of the vocabulary each; an int8
    head (`sonar_llm_hf.quantization.Int8VocabularyProjection`) brings its own chunks."""
    if hasattr(lm_head, "vocab_chunks"):
        return lm_head.vocab_chunks()
    weight = lm_head.weight
    if weight.device.type == "meta":  # offloaded by `device_map`: only the head's own call loads its weights
        return ((0, lm_head),)
    return ((start, lambda h, w=weight[start : start + VOCAB_CHUNK]: linear(h, w)) for start in range(0, weight.shape[0], VOCAB_CHUNK))


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
    prune_rows: bool = True,
) -> tuple[list[list[int]], list[float]]:
    """Best hypothesis per input: generated ids after `prompt` (ending with `</s>`) and its score.

    `decoder` is a `SonarTextDecoder`; `embeddings` (N, d); `prompt` (N, P), `[</s>, lang]` per row.
    `prune_rows` takes each beam's best 2 x beam tokens before ranking an input's candidates, which selects the
    same candidates as fairseq2's top-k over all beams x vocabulary at a fraction of the cost; `False` runs
    fairseq2's own top-k (the benchmarks' restatement of the reference).
    """
    config = decoder.config
    eos, unk = config.eos_token_id, 3
    num_inputs, prompt_len = prompt.shape
    check_decoder_positions(max_length, config.max_position_embeddings)  # an error, never a silent clamp
    max_seq_len = max_length
    if prompt_len >= max_seq_len:
        raise ValueError(f"`max_length` ({max_length}) must exceed the prompt length ({prompt_len}).")
    device = embeddings.device
    # fairseq2 never allows padding; we also block ids the tokenizer cannot decode (filled as runs of ids: the rows
    # past the tokenizer are one slice).
    blocked = _runs(sorted(set(suppress_ids or []) | {config.pad_token_id}))
    candidates_per_row = min(2 * beam_size, config.vocab_size)

    seqs = torch.zeros(num_inputs, max_seq_len, dtype=torch.long, device=device)
    seqs[:, :prompt_len] = prompt
    step_scores = torch.zeros(num_inputs, max_seq_len, dtype=torch.float32, device=device)
    memory = embeddings.unsqueeze(1)  # (N, 1, d)
    spares = SpareBuffers()
    layers = [BeamSearchCacheLayer(num_inputs * beam_size, max_seq_len, spares) for _ in range(config.decoder_layers)]
    cache = EncoderDecoderCache(Cache(layers=layers), DynamicCache())

    scratch: list[torch.Tensor] = []

    def scratch_like(tensor: torch.Tensor) -> torch.Tensor:
        """One buffer reused for every chunk's exponentials: a fresh megabytes-large tensor per chunk is fresh pages
        from the allocator, whose page faults cost more than the exponentials themselves (measured in BENCHMARKS.md)."""
        if not scratch or scratch[0].numel() < tensor.numel():
            scratch[:] = [tensor.new_empty(tensor.numel())]
        return scratch[0][: tensor.numel()].view_as(tensor)

    def next_log_probs(tokens: torch.LongTensor) -> torch.Tensor:
        logits = decoder(decoder_input_ids=tokens, encoder_outputs=(memory,), cache=cache, use_cache=True,
                         return_dict=True).logits  # fmt: skip
        return torch.log_softmax(logits.float(), dim=-1).to(device)  # (rows, T, V)

    def adjust(logits: torch.Tensor, start: int) -> None:
        """fairseq2's constraints on log-probs, applied to the chunk of logits for ids start..start + width."""
        stop = start + logits.shape[1]
        if start <= unk < stop:
            logits[:, unk - start] -= unk_penalty
        for first, last in blocked:
            if first < stop and last > start:
                logits[:, max(first, start) - start : min(last, stop) - start] = -torch.inf

    def best_next_tokens(tokens: torch.LongTensor, k: int, forced: int | None):
        """Each row's k best next tokens and their log-probs, projecting the vocabulary chunk by chunk."""
        hidden = decoder.decoder(input_ids=tokens, encoder_hidden_states=memory, cache=cache, use_cache=True,
                                 return_dict=True)  # fmt: skip
        # (rows, d), brought to the tied LM head's device (`device_map` may put the last layer on another one)
        hidden = hidden.last_hidden_state[:, -1].to(device)
        maxes, sums, values, ids = [], [], [], []
        for start, project in vocab_chunks(decoder.lm_head):
            logits = project(hidden).float()  # (rows, chunk)
            top = logits.amax(-1, keepdim=True)
            maxes.append(top)
            shifted = torch.sub(logits, top, out=scratch_like(logits))
            sums.append(shifted.clamp_min_(EXP_FLOOR).exp_().sum(-1, keepdim=True))
            if forced is None:
                adjust(logits, start)
                value, index = torch.topk(logits, k=min(k, logits.shape[1]), dim=-1)
                values.append(value)
                ids.append(index + start)
            elif start <= forced < start + logits.shape[1]:
                values.append(logits[:, forced - start : forced - start + 1])
                ids.append(torch.full_like(values[-1], forced, dtype=torch.long))
        maxes = torch.cat(maxes, dim=-1)
        overall = maxes.amax(-1, keepdim=True)
        log_norm = overall + torch.log((torch.cat(sums, dim=-1) * (maxes - overall).exp()).sum(-1, keepdim=True))
        value, index = torch.topk(torch.cat(values, dim=-1), k=min(k, sum(v.shape[1] for v in values)), dim=-1)
        return value - log_norm, torch.cat(ids, dim=-1).gather(1, index)

    # 1. prefill: score the forced prompt tokens (fairseq2 counts log p(lang | </s>) in every hypothesis)
    lprobs = next_log_probs(seqs[:, : prompt_len - 1])
    scores = lprobs.gather(-1, seqs[:, 1:prompt_len].unsqueeze(-1)).squeeze(-1).cumsum(-1)
    step_scores[:, 1:prompt_len] = scores

    beam_sizes = [1] * num_inputs
    input_index = torch.arange(num_inputs, device=device)  # which input each row belongs to
    finished: list[list[tuple[torch.Tensor, list[int]]]] = [[] for _ in range(num_inputs)]
    for step in range(prompt_len, max_seq_len):
        # 2. next-token log-probs with fairseq2's constraints, then each row's best 2 x beam tokens: the best
        #    2 x beam candidates of an input over all its beams are among them (a beam adds one score to a row)
        last = step == max_seq_len - 1
        if prune_rows:
            row_scores, row_tokens = best_next_tokens(seqs[:, step - 1 : step], candidates_per_row, eos if last else None)
        else:  # fairseq2's way: full log-probs, top-k over all beams x vocabulary
            lprobs = next_log_probs(seqs[:, step - 1 : step])[:, -1]  # (rows, V)
            if last:
                row_scores, row_tokens = lprobs[:, eos : eos + 1], torch.full_like(lprobs[:, :1], eos, dtype=torch.long)
            else:
                adjust(lprobs, 0)
                row_scores, row_tokens = lprobs, torch.arange(config.vocab_size, device=device).expand_as(lprobs)
        row_scores = row_scores + step_scores[:, step - 1 : step]
        # 3. per input: best 2 x beam candidates; `</s>` among the first `beam` ends a hypothesis
        keep_rows, keep_tokens, keep_scores, new_sizes = [], [], [], []
        offset = 0
        for size in beam_sizes:
            rows = slice(offset, offset + size)
            candidates = row_scores[rows].reshape(-1)
            top_scores, top_index = torch.topk(candidates, k=min(2 * beam_size, candidates.numel()))
            per_row = row_scores.shape[1]
            row_index, token = top_index // per_row + offset, row_tokens[rows].reshape(-1)[top_index]
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


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids as [start, stop) runs of consecutive ids."""
    runs = []
    for i in ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


__all__ = ["fairseq2_beam_search", "BeamSearchCacheLayer"]
