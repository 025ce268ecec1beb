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

from dataclasses import dataclass, field, fields, replace
from functools import partial

import torch
from torch import nn
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, EncoderDecoderCache

from .configuration_sonar_text import check_decoder_positions, check_decoding

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


@dataclass
class SonarDecodingSettings:
    """How `SonarTextDecoder.decode` turns embeddings into text; the defaults are fairseq2's
    `EmbeddingToTextModelPipeline` as SONAR-LLM calls it.

    num_beams: beam width (1: greedy through transformers' `generate`).
    max_length: decoder positions, counting the `[</s>, lang]` prompt; `</s>` is forced at the last one.
    batch_size: embeddings decoded per call.
    do_sample: sample through transformers' `generate` (with `generate_kwargs` such as `temperature`, `top_p`).
    beam_search: "fairseq2" (its own search and scoring, the default) or "transformers" (`generate`'s).
    len_penalty, unk_penalty: fairseq2's; only its search uses them.
    generate_kwargs: further options for transformers' `generate` (refused by the fairseq2 search).
    """

    num_beams: int = 5
    max_length: int = 256
    batch_size: int = 32
    do_sample: bool = False
    beam_search: str = "fairseq2"
    len_penalty: float = 1.0
    unk_penalty: float = 0.0
    generate_kwargs: dict = field(default_factory=dict)

    @classmethod
    def build(cls, settings: SonarDecodingSettings | None = None, **options) -> SonarDecodingSettings:
        """`settings` (or the defaults) with `options` applied: fields by name, anything else for `generate`."""
        settings = replace(settings) if settings is not None else cls()
        names = {f.name for f in fields(cls)} - {"generate_kwargs"}
        extra = {key: value for key, value in options.items() if key not in names}
        settings = replace(settings, **{key: value for key, value in options.items() if key in names})
        settings.generate_kwargs = {**settings.generate_kwargs, **extra}
        return settings

    @property
    def uses_fairseq2_search(self) -> bool:
        return self.num_beams > 1 and not self.do_sample and self.beam_search == "fairseq2"

    def validate(self, positions: int) -> None:
        """Refuse options that would fail late or silently mean something else, naming them."""
        if self.beam_search not in ("fairseq2", "transformers"):
            raise ValueError(f"`beam_search` must be 'fairseq2' or 'transformers', got {self.beam_search!r}.")
        check_decoding(self.num_beams, self.max_length, positions, self.batch_size, self.do_sample,
                       **self.generate_kwargs)  # fmt: skip
        if self.uses_fairseq2_search and self.generate_kwargs:
            raise TypeError(f"Options {sorted(self.generate_kwargs)} need `beam_search='transformers'`.")


def vocab_chunks(lm_head):
    """(first id, function) pairs projecting hidden states onto VOCAB_CHUNK rows of the vocabulary each; a head that
    brings its own chunks (int8 or oneDNN, `sonar_llm_hf.speed`) has a `vocab_chunks` method."""
    if hasattr(lm_head, "vocab_chunks"):
        return lm_head.vocab_chunks()
    weight = lm_head.weight
    if weight.device.type == "meta":  # offloaded by `device_map`: only the head's own call loads its weights
        return ((0, lm_head),)
    return ((start, lambda h, w=weight[start : start + VOCAB_CHUNK]: nn.functional.linear(h, w))
            for start in range(0, weight.shape[0], VOCAB_CHUNK))  # fmt: skip


class ScratchBuffer:
    """One buffer reused for every vocabulary chunk's exponentials: a fresh megabytes-large tensor per chunk is fresh
    pages from the allocator, whose page faults cost more than the exponentials themselves (BENCHMARKS.md)."""

    def __init__(self):
        self.buffer: torch.Tensor | None = None

    def like(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.buffer is None or self.buffer.numel() < tensor.numel():
            self.buffer = tensor.new_empty(tensor.numel())
        return self.buffer[: tensor.numel()].view_as(tensor)


class TokenConstraints:
    """fairseq2's constraints on next-token scores: padding (and ids the tokenizer cannot decode) never, `<unk>`
    penalised by `unk_penalty`. Applied to a chunk of logits for ids start..start + width."""

    def __init__(self, blocked_ids, unk_id: int, unk_penalty: float):
        self.runs = _runs(sorted(set(blocked_ids)))  # runs of ids: the rows past the tokenizer are one slice
        self.unk_id, self.unk_penalty = unk_id, unk_penalty

    def apply(self, logits: torch.Tensor, start: int) -> None:
        stop = start + logits.shape[1]
        if start <= self.unk_id < stop:
            logits[:, self.unk_id - start] -= self.unk_penalty
        for first, last in self.runs:
            if first < stop and last > start:
                logits[:, max(first, start) - start : min(last, stop) - start] = -torch.inf


def chunked_top_log_probs(hidden, lm_head, k: int, constraints: TokenConstraints, forced: int | None = None,
                          scratch: ScratchBuffer | None = None):  # fmt: skip
    """Each row's k best next tokens and their log-probs, (rows, k) each, projecting the vocabulary chunk by chunk.

    The normaliser is a chunked log-sum-exp over the unconstrained logits (as fairseq2 normalises before its
    constraints); with `forced`, only that id is returned. Equal to `log_softmax` then `topk` over the full logits.
    """
    scratch = scratch or ScratchBuffer()
    maxes, sums, values, ids = [], [], [], []
    for start, project in vocab_chunks(lm_head):
        logits = project(hidden).float()  # (rows, chunk)
        top = logits.amax(-1, keepdim=True)
        maxes.append(top)
        shifted = torch.sub(logits, top, out=scratch.like(logits))
        sums.append(shifted.clamp_min_(EXP_FLOOR).exp_().sum(-1, keepdim=True))
        if forced is None:
            constraints.apply(logits, start)
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


@dataclass
class InputSelection:
    """What one input keeps after a step: its surviving rows, their tokens and scores, and whether it is closed."""

    rows: torch.Tensor
    tokens: torch.Tensor
    scores: torch.Tensor
    closed: bool = False


def select_candidates(row_scores, row_tokens, offset: int, beam_size: int, eos: int, on_eos) -> InputSelection:
    """fairseq2's step for one input whose beams are rows offset..offset + len(row_scores): its best 2 x beam
    candidates over all beams; `</s>` among the first `beam_size` of them ends a hypothesis (`on_eos(row, score)`,
    which returns True once the input has `beam_size` hypotheses: the input closes); the best `beam_size` others
    live on."""
    candidates = row_scores.reshape(-1)
    top_scores, top_index = torch.topk(candidates, k=min(2 * beam_size, candidates.numel()))
    per_row = row_scores.shape[1]
    row_index, token = top_index // per_row + offset, row_tokens.reshape(-1)[top_index]
    is_eos = token == eos
    for j in torch.nonzero(is_eos[:beam_size]).flatten().tolist():
        if on_eos(int(row_index[j]), top_scores[j]):
            return InputSelection(row_index[:0], token[:0], top_scores[:0], closed=True)
    alive = ~is_eos
    return InputSelection(row_index[alive][:beam_size], token[alive][:beam_size], top_scores[alive][:beam_size])


class Fairseq2BeamSearch:
    """fairseq2's `BeamSearchSeq2SeqGenerator` for a `SonarTextDecoder`, step by step:

    1. `prefill`: score the forced prompt (fairseq2 counts log p(lang | </s>) in every hypothesis);
    2. `row_candidates`: each live row's best next tokens with fairseq2's constraints (`</s>` forced last);
    3. `select_candidates` per input: hypotheses end on `</s>`, the best `beam_size` others survive;
    4. `advance`: keep the surviving rows (reordering the KV cache) and record the step;
    5. `best`: each input's best finished hypothesis.

    `embeddings` (N, d); `prompt` (N, P), `[</s>, lang]` per row. `prune_rows` takes each beam's best 2 x beam
    tokens before ranking an input's candidates, which selects the same candidates as fairseq2's top-k over all
    beams x vocabulary at a fraction of the cost; `False` runs fairseq2's own top-k (the benchmarks' restatement).
    """

    def __init__(self, decoder, embeddings: torch.Tensor, prompt: torch.LongTensor, beam_size: int = 5,
                 max_length: int = 512, len_penalty: float = 1.0, unk_penalty: float = 0.0,
                 suppress_ids: list[int] | None = None, prune_rows: bool = True):  # fmt: skip
        config = decoder.config
        check_decoder_positions(max_length, config.max_position_embeddings)  # an error, never a silent clamp
        self.num_inputs, self.prompt_len = prompt.shape
        if self.prompt_len >= max_length:
            raise ValueError(f"`max_length` ({max_length}) must exceed the prompt length ({self.prompt_len}).")
        self.decoder, self.beam_size, self.max_length = decoder, beam_size, max_length
        self.len_penalty, self.prune_rows, self.eos, self.vocab_size = (
            len_penalty,
            prune_rows,
            config.eos_token_id,
            config.vocab_size,
        )
        # fairseq2 never allows padding; we also block ids the tokenizer cannot decode
        self.constraints = TokenConstraints([*(suppress_ids or []), config.pad_token_id], 3, unk_penalty)
        self.device = device = embeddings.device
        self.seqs = torch.zeros(self.num_inputs, max_length, dtype=torch.long, device=device)
        self.seqs[:, : self.prompt_len] = prompt
        self.step_scores = torch.zeros(self.num_inputs, max_length, dtype=torch.float32, device=device)
        self.memory = embeddings.unsqueeze(1)  # (N, 1, d)
        spares = SpareBuffers()
        layers = [
            BeamSearchCacheLayer(self.num_inputs * beam_size, max_length, spares) for _ in range(config.decoder_layers)
        ]
        self.cache = EncoderDecoderCache(Cache(layers=layers), DynamicCache())
        self.scratch = ScratchBuffer()
        self.beam_sizes = [1] * self.num_inputs
        self.input_index = torch.arange(self.num_inputs, device=device)  # which input each row belongs to
        self.finished: list[list[tuple[torch.Tensor, list[int]]]] = [[] for _ in range(self.num_inputs)]

    def full_log_probs(self, tokens: torch.LongTensor) -> torch.Tensor:
        logits = self.decoder(decoder_input_ids=tokens, encoder_outputs=(self.memory,), cache=self.cache,
                              use_cache=True, return_dict=True).logits  # fmt: skip
        return torch.log_softmax(logits.float(), dim=-1).to(self.device)  # (rows, T, V)

    @torch.no_grad()
    def prefill(self) -> None:
        lprobs = self.full_log_probs(self.seqs[:, : self.prompt_len - 1])
        forced = self.seqs[:, 1 : self.prompt_len].unsqueeze(-1)
        self.step_scores[:, 1 : self.prompt_len] = lprobs.gather(-1, forced).squeeze(-1).cumsum(-1)

    @torch.no_grad()
    def row_candidates(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows, k) cumulative scores and tokens of each live row's candidates for position `step`."""
        tokens, last = self.seqs[:, step - 1 : step], step == self.max_length - 1
        if self.prune_rows:
            hidden = self.decoder.decoder(input_ids=tokens, encoder_hidden_states=self.memory, cache=self.cache,
                                          use_cache=True, return_dict=True).last_hidden_state  # fmt: skip
            # (rows, d), brought to the tied LM head's device (`device_map` may put the last layer on another one)
            hidden = hidden[:, -1].to(self.device)
            scores, ids = chunked_top_log_probs(
                hidden,
                self.decoder.lm_head,
                min(2 * self.beam_size, self.vocab_size),
                self.constraints,
                self.eos if last else None,
                self.scratch,
            )
        else:  # fairseq2's way: full log-probs, top-k over all beams x vocabulary
            lprobs = self.full_log_probs(tokens)[:, -1]  # (rows, V)
            if last:
                scores, ids = (
                    lprobs[:, self.eos : self.eos + 1],
                    torch.full_like(lprobs[:, :1], self.eos, dtype=torch.long),
                )
            else:
                self.constraints.apply(lprobs, 0)
                scores, ids = lprobs, torch.arange(self.vocab_size, device=self.device).expand_as(lprobs)
        return scores + self.step_scores[:, step - 1 : step], ids

    def finish(self, step: int, row: int, score: torch.Tensor) -> bool:
        """Record the hypothesis of `row` ending with `</s>` at `step`; True once its input has `beam_size`."""
        owner = int(self.input_index[row])
        normalised = score / step**self.len_penalty  # scored tokens: lang + text + `</s>`
        self.finished[owner].append((normalised, [*self.seqs[row, self.prompt_len : step].tolist(), self.eos]))
        return len(self.finished[owner]) == self.beam_size

    def advance(self, step: int, selections: list[InputSelection]) -> None:
        order = torch.cat([selection.rows for selection in selections])
        self.cache.reorder_cache(order)
        self.memory = self.memory.index_select(0, order)
        self.seqs = self.seqs.index_select(0, order)
        self.step_scores = self.step_scores.index_select(0, order)
        self.input_index = self.input_index.index_select(0, order)
        self.seqs[:, step] = torch.cat([selection.tokens for selection in selections])
        self.step_scores[:, step] = torch.cat([selection.scores for selection in selections])
        self.beam_sizes = [len(selection.rows) for selection in selections]

    def best(self) -> tuple[list[list[int]], list[float]]:
        tokens, scores = [], []
        for hypotheses in self.finished:
            hypotheses.sort(key=lambda h: float(h[0]), reverse=True)  # stable, as fairseq2's list.sort
            tokens.append(hypotheses[0][1])
            scores.append(float(hypotheses[0][0]))
        return tokens, scores

    @torch.no_grad()
    def run(self) -> tuple[list[list[int]], list[float]]:
        """Best hypothesis per input: generated ids after the prompt (ending with `</s>`) and its score."""
        self.prefill()
        for step in range(self.prompt_len, self.max_length):
            row_scores, row_tokens = self.row_candidates(step)
            selections, offset = [], 0
            for size in self.beam_sizes:
                rows = slice(offset, offset + size)
                selection = select_candidates(row_scores[rows], row_tokens[rows], offset, self.beam_size, self.eos,
                                              partial(self.finish, step))  # fmt: skip
                offset += size
                if not selection.closed:
                    selections.append(selection)
            if not selections:
                break
            self.advance(step, selections)
        return self.best()


def fairseq2_beam_search(decoder, embeddings: torch.Tensor, prompt: torch.LongTensor, **options):
    """`Fairseq2BeamSearch(decoder, embeddings, prompt, **options).run()`: best ids and score per input."""
    return Fairseq2BeamSearch(decoder, embeddings, prompt, **options).run()


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids as [start, stop) runs of consecutive ids."""
    runs = []
    for i in ids:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


__all__ = [
    "Fairseq2BeamSearch",
    "fairseq2_beam_search",
    "BeamSearchCacheLayer",
    "SonarDecodingSettings",
    "VOCAB_CHUNK",
]
