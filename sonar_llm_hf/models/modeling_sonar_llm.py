"""SONAR-LLM (arXiv 2508.05305): a Llama decoder that predicts the next sentence as a SONAR embedding.

    sentence embeddings (B, T, 1024) -> sentence_in_proj -> Llama layers -> sentence_out_proj -> predictions (B, T, d)

Training pushes token cross-entropy through the frozen SONAR decoder: the prediction at position t-1 is the
decoder's cross-attention memory when teacher-forcing the tokens of sentence t. Generation decodes each prediction
to text with SONAR beam search (`generation_sonar_llm.py`). The frozen SONAR encoder and decoder are submodules and
live in the same checkpoint, so one folder is a complete model.
"""

from __future__ import annotations

from dataclasses import dataclass

import sentencex  # noqa: F401  (see below)
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationConfig, GenerationMixin, LlamaModel, PreTrainedModel
from transformers.models.m2m_100.modeling_m2m_100 import M2M100SinusoidalPositionalEmbedding
from transformers.utils import ModelOutput, can_return_tuple, logging

from .configuration_sonar_llm import SonarLLMConfig, check_loss_type
from .configuration_sonar_text import check_token_labels
from .generation_sonar_llm import DEFAULT_SENTENCE_GENERATION, generate_sentences, merge_generation_options
from .modeling_sonar_text import SonarTextDecoder, SonarTextEncoder, check_sentence_embeddings
from .tokenization_sonar import SonarTokenizerMixin

# SONAR-LLM's training loss: token cross-entropy over SONAR's 256k vocabulary without materialising the logits, and
# the one counting rule that keeps every loss type exact under `Trainer`.
#
# It lives apart from the SONAR modules because only SONAR-LLM trains through the decoder this way; the decoder's own
# `forward(labels=...)` keeps transformers' plain cross-entropy.
#
# Counting rule. `Trainer` divides the loss by `num_items_in_batch`, its count of `labels != -100` over all the
# micro-batches of one optimizer step on all devices. Every loss type is therefore a sum over target tokens divided by
# that count: the cross-entropy of each token, and the MSE of each predicted sentence once per target token of it. A
# sum over the same items on every micro-batch, divided by their global count, is what one large batch gives, so
# gradient accumulation and data parallelism are exact. It holds only if every label that is not -100 is an item the
# model scores; `check_countable_labels` refuses labels for which it does not (sentence 0, padded sentences, ...).


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


logger = logging.get_logger(__name__)

# `sentencex` splits text prompts (`generation_sonar_llm.py`). It is imported above as well because transformers'
# `check_imports` reads only this file of a local folder (each file of a Hub repo): loading without it then fails
# with "requires the following packages ... Run `pip install sentencex`", never with a different splitter.


@dataclass
class SonarLLMOutput(ModelOutput):
    """Outputs of [`SonarLLMForCausalSentenceModeling`].

    Args:
        loss: the training loss (see `SonarLLMConfig.loss_type`), `loss` first for `Trainer`.
        predicted_embeddings (B, T, d): position t predicts the embedding of sentence t + 1.
        cache: the backbone's key/value cache when `use_cache=True`.
        hidden_states: the backbone's hidden states (its input and each layer's output, (B, T, H) each) when
            `output_hidden_states=True`.
        attentions: the backbone's attention weights per layer, (B, heads, T, T), when `output_attentions=True`
            (with `attn_implementation="eager"`; SDPA and flash attention compute none).
        ce_loss, mse_loss: the loss terms, detached, for logging.
        num_target_tokens: the target tokens of this batch, the items every loss type averages over (with
            `num_items_in_batch`, the loss is their sum divided by that count instead).
    """

    loss: torch.FloatTensor | None = None
    predicted_embeddings: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    ce_loss: torch.FloatTensor | None = None
    mse_loss: torch.FloatTensor | None = None
    num_target_tokens: torch.LongTensor | None = None


class SonarLLMPreTrainedModel(SonarTokenizerMixin, PreTrainedModel):
    config_class = SonarLLMConfig
    base_model_prefix = ""
    main_input_name = "sentence_embeddings"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer", "M2M100EncoderLayer", "M2M100DecoderLayer"]
    _skip_keys_device_placement = ["cache", "past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _tied_weights_keys = {"sonar_decoder.lm_head.weight": "sonar_decoder.decoder.embed_tokens.weight"}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, M2M100SinusoidalPositionalEmbedding):
            # Position tables are buffers, never in checkpoints: rebuild them after meta-device init.
            table = module.get_embedding(
                module.num_positions + module.offset, module.embedding_dim, module.padding_idx
            )
            with torch.no_grad():
                module.weights.copy_(table.to(module.weights.device, module.weights.dtype))


class SonarLLMForCausalSentenceModeling(SonarLLMPreTrainedModel, GenerationMixin):
    r"""
    SONAR-LLM with its frozen SONAR encoder and decoder.

    Example:

    ```python
    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained("path/to/sonar-llm-900m", trust_remote_code=True)
    >>> out = model.generate(["Once upon a time, there was a little cat. The cat was hungry."])
    >>> out.texts[0]
    ```
    """

    # Trainer passes `num_items_in_batch` so that gradient accumulation averages over all target tokens.
    accepts_loss_kwargs = True

    def __init__(self, config: SonarLLMConfig):
        super().__init__(config)
        hidden = config.llama_config.hidden_size
        # The projections' names are unique on purpose: PEFT matches `modules_to_save` by suffix, and plain
        # "in_proj"/"out_proj" would also catch every SONAR attention projection.
        self.sentence_in_proj = nn.Linear(config.embed_dim, hidden)  # reference `forward_proj.linear`
        self.model = LlamaModel(config.llama_config)
        # The reference's token embedding never gets a gradient: sentences enter through `sentence_in_proj`.
        self.model.embed_tokens = None
        self.sentence_out_proj = nn.Linear(hidden, config.embed_dim)  # reference `reverse_proj.linear`
        self.sonar_encoder = SonarTextEncoder(config.encoder_config)
        self.sonar_decoder = SonarTextDecoder(config.decoder_config)
        self.post_init()
        self._freeze_sonar()
        self.generation_config = GenerationConfig(**DEFAULT_SENTENCE_GENERATION)

    # -- set-up ---------------------------------------------------------------------------------------------------

    def _freeze_sonar(self) -> None:
        """SONAR stays frozen (and in eval mode, without dropout) unless `train_sonar_decoder` is set."""
        self.sonar_encoder.requires_grad_(False)
        self.sonar_decoder.requires_grad_(bool(self.config.train_sonar_decoder))
        self.sonar_encoder.eval()
        if not self.config.train_sonar_decoder:
            self.sonar_decoder.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.sonar_encoder.eval()
        if not self.config.train_sonar_decoder:
            self.sonar_decoder.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.sentence_in_proj

    def _input_dtype(self) -> torch.dtype:
        """The dtype `sentence_in_proj` computes in (its weight's; PEFT may wrap the layer)."""
        for parameter in self.sentence_in_proj.parameters():
            if parameter.is_floating_point():
                return parameter.dtype
        return self.dtype

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.sentence_in_proj = value

    def get_output_embeddings(self) -> None:
        return None  # no token vocabulary: outputs are embeddings

    def _after_loading(self) -> None:
        self._freeze_sonar()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also lists the sentence pipeline in config.json (`custom_pipelines`), so that `pipeline(model=folder,
        trust_remote_code=True)` finds its task; the import below makes `save_pretrained` copy its file too."""
        from .pipeline_sonar_llm import custom_pipelines_entry

        self.config.custom_pipelines = custom_pipelines_entry()
        return super().save_pretrained(save_directory, *args, **kwargs)

    @property
    def tokenizer(self):
        """The SONAR tokenizer, shared with the encoder and decoder (loaded with the weights, or set by hand)."""
        return self.sonar_encoder.tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        self.sonar_encoder.tokenizer = value
        self.sonar_decoder.tokenizer = value

    # -- forward --------------------------------------------------------------------------------------------------

    def predict_next(
        self,
        sentence_embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> SonarLLMOutput:
        """Backbone pass only: predicted next-sentence embeddings (B, T, d), the cache, and the backbone's hidden
        states / attentions when asked (`output_hidden_states`, `output_attentions`, here or in `config`)."""
        kwargs.pop("return_dict", None)  # always a `SonarLLMOutput`; `forward` makes tuples
        self._check_positions(sentence_embeddings, position_ids, cache)
        for name in ("output_hidden_states", "output_attentions"):
            if kwargs.get(name) is None and getattr(self.config, name, False):
                kwargs[name] = True  # the backbone reads its own config, not this one
        # Embeddings come in fp32 (SONAR, the collator); a bf16/fp16 model takes them in its own dtype.
        sentence_embeddings = sentence_embeddings.to(self._input_dtype())
        hidden = self.sentence_in_proj(sentence_embeddings)  # (B, T, d) -> (B, T, H)
        outputs = self.model(
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        predicted = self.sentence_out_proj(outputs.last_hidden_state)  # (B, T, H) -> (B, T, d)
        return SonarLLMOutput(
            predicted_embeddings=predicted,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @can_return_tuple  # `return_dict=False` (or `config.return_dict=False`): a tuple, `loss` first when computed
    def forward(
        self,
        sentence_embeddings: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        use_cache: bool | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> SonarLLMOutput:
        r"""
        sentence_embeddings (`torch.Tensor` of shape `(B, T, d)`): SONAR embeddings of each document's sentences,
            in any floating dtype (cast to the model's: an fp32 batch feeds a bf16 model).
        attention_mask (`torch.Tensor` of shape `(B, T)`): 1 for real sentences, 0 for padding.
        labels (`torch.LongTensor` of shape `(B, T, L)`): token ids of the same sentences, `[lang] pieces </s>`,
            padded with -100. Position t-1 predicts sentence t (the shift happens here, as in causal LMs), so
            `labels[:, 0]` and the labels of padded sentences are never targets. Without `num_items_in_batch` any
            such labels are ignored and the loss is the mean over the targets. Under `Trainer`, lay them out as
            `SonarLLMDataCollator` does: -100 wherever there is no target. A target ends at its last label; an
            interior -100 leaves that token out of the loss (the decoder reads padding there, as transformers'
            `shift_tokens_right` does). The loss means the same whatever the layout: "ce" is the mean over target
            tokens, "mse" the plain mean over target sentences, "ce+mse" their sum, its MSE counting each sentence
            once per target token of it.
        num_items_in_batch: the number of items to divide by, counted as `Trainer` counts it: `labels != -100` over
            every micro-batch of the optimizer step, on every device. The loss is then a sum over this micro-batch's
            items divided by it, so gradient accumulation and data parallelism equal one large batch, for every
            `loss_type`: the items are target tokens ("ce", "ce+mse") or target sentences ("mse", whose labels must
            then hold one label per target sentence, as `SonarLLMDataCollator.for_model` lays them out). Because
            that count covers every label, labels that are not items (`labels[:, 0]`, padded sentences, the extra
            `</s>` of `duplicate_final_eos_target` missing from the labels, every token of a sentence for "mse")
            would divide the loss by the wrong number: they raise a `ValueError` saying how many there are and what
            to change, instead of training with a silently scaled learning rate.
        output_hidden_states, output_attentions, return_dict: as in every transformers model (the backbone's states
            and attention weights; `return_dict=False` returns `SonarLLMOutput.to_tuple()`, `loss` first).
        """
        self._check_inputs(sentence_embeddings, attention_mask, labels)
        if labels is not None and use_cache is None:
            use_cache = False  # training: Trainer only turns the cache off on the top-level config
        outputs = self.predict_next(
            sentence_embeddings, attention_mask, position_ids=position_ids, cache=cache, use_cache=use_cache, **kwargs
        )
        if labels is not None:
            self._add_loss(outputs, sentence_embeddings, attention_mask, labels, num_items_in_batch)
            # Fields set after construction join the keys last; rebuilding orders them as declared, so that
            # `to_tuple()` (hence `return_dict=False`) puts `loss` first, as in every transformers model.
            outputs = SonarLLMOutput(**outputs)
        return outputs

    def _check_positions(self, embeddings, position_ids, cache) -> None:
        """Positions past the backbone's `max_position_embeddings` would be extrapolated by RoPE without a word."""
        positions = self.config.llama_config.max_position_embeddings
        if position_ids is not None:
            last = int(position_ids.max()) + 1 if position_ids.numel() else 0
        else:  # the backbone counts on from the cached sentences
            last = embeddings.shape[1] + (cache.get_seq_length() if cache is not None else 0)
        if last > positions:
            raise ValueError(
                f"The backbone would run {last} sentence positions but has {positions} "
                f"(`llama_config.max_position_embeddings`); past them its rotary positions extrapolate untrained. "
                "Pass shorter documents (fewer sentences)."
            )

    def _check_inputs(self, embeddings, attention_mask, labels) -> None:
        check_sentence_embeddings(embeddings, self.config.embed_dim)
        if embeddings.dim() != 3:
            raise ValueError(
                f"`sentence_embeddings` must have shape (batch, sentences, {self.config.embed_dim}), "
                f"got {tuple(embeddings.shape)}."
            )
        if attention_mask is not None and attention_mask.shape != embeddings.shape[:2]:
            raise ValueError(
                f"`attention_mask` has shape {tuple(attention_mask.shape)} but the embeddings are "
                f"{tuple(embeddings.shape[:2])} (batch, sentences)."
            )
        if labels is not None:
            if labels.dim() != 3 or labels.shape[:2] != embeddings.shape[:2]:
                raise ValueError(
                    f"`labels` must have shape (batch, sentences, tokens) aligned with the embeddings "
                    f"{tuple(embeddings.shape[:2])}, got {tuple(labels.shape)}."
                )
            if labels.dtype not in (torch.long, torch.int32, torch.int64):
                raise TypeError(f"`labels` must hold integer token ids, got dtype {labels.dtype}.")
            check_token_labels(labels, self.sonar_decoder.config.vocab_size)

    def _add_loss(self, outputs, embeddings, attention_mask, labels, num_items_in_batch) -> None:
        """Cross-entropy through the frozen decoder (and/or MSE) for every position that has a next sentence.

        Every loss type is a sum over target tokens divided by their count (`modeling_sonar_llm.py`, "Counting rule"):
        `num_items_in_batch` under `Trainer`, this batch's own count otherwise.
        """
        predicted = outputs.predicted_embeddings
        loss_type = check_loss_type(self.config.loss_type)  # also catches a config changed behind its back
        # 1. pair position t-1 with sentence t
        targets = labels[:, 1:]  # (B, T-1, L)
        present = (targets != -100).any(dim=-1)  # (B, T-1)
        if attention_mask is not None:
            present &= attention_mask[:, 1:].bool().to(present.device)
        # With `device_map`, labels and inputs sit on the first device and predictions on the last one's.
        pred = predicted[:, :-1][present.to(predicted.device)]  # (N, d)
        token_labels = targets[present].long()  # (N, L)
        appended = 0
        if loss_type != "mse" and labels.shape[-1] == 1:
            raise ValueError(
                f"`labels` hold one token per sentence (`SonarLLMDataCollator(one_label_per_sentence=True)`, made for "
                f"loss_type='mse'), but loss_type={loss_type!r} scores every target token. Collate with "
                "`SonarLLMDataCollator.for_model(model)`, which lays labels out for the model's loss type."
            )
        if loss_type != "mse" and self.config.duplicate_final_eos_target:
            before = int((token_labels != -100).sum())
            token_labels = append_eos_target(token_labels, self.sonar_decoder.config.eos_token_id)
            appended = int((token_labels != -100).sum()) - before
        # 2. the items, whatever the labels' layout: target tokens, and for "mse" target sentences (its plain mean;
        # in "ce+mse" each sentence's MSE counts once per target token of it)
        tokens_per_sentence = (token_labels != -100).sum(dim=-1)  # (N,)
        if loss_type == "mse":
            tokens_per_sentence = torch.ones_like(tokens_per_sentence)
        count = tokens_per_sentence.sum()
        if num_items_in_batch is not None:
            check_countable_labels(labels, attention_mask, count, appended, per_sentence=loss_type == "mse")
            denominator = num_items_in_batch
        else:
            denominator = count.clamp(min=1)
        loss = predicted.new_zeros((), dtype=torch.float32)
        # 3. the terms, each a sum divided by the same count
        if loss_type in ("ce", "ce+mse"):
            ce_sum, _ = self._decoder_cross_entropy(pred, token_labels)
            ce = (ce_sum / _on(denominator, ce_sum.device)).to(loss.device)
            loss = loss + ce
            outputs.ce_loss = ce.detach()
        if loss_type in ("mse", "ce+mse"):
            target_embeddings = embeddings[:, 1:][present].to(pred.device)  # (N, d)
            squared = token_weighted_squared_error(pred, target_embeddings, tokens_per_sentence)
            mse = (squared / _on(denominator, squared.device)).to(loss.device)
            weight = self.config.mse_weight if loss_type == "ce+mse" else 1.0
            loss = loss + weight * mse
            outputs.mse_loss = mse.detach()
        outputs.num_target_tokens = count
        outputs.loss = loss

    def _decoder_cross_entropy(self, pred: torch.Tensor, token_labels: torch.Tensor):
        """Teacher-forced token CE: decoder input `[</s>, lang, pieces]`, targets `[lang, pieces, </s>]`."""
        token_labels = token_labels.long()
        width = int(last_label_end(token_labels).max().item()) if token_labels.numel() else 0
        token_labels = token_labels[:, : max(width, 1)]  # drop the all-padding columns after every target's end
        start = torch.full_like(token_labels[:, :1], self.sonar_decoder.config.decoder_start_token_id)
        decoder_input = torch.cat([start, token_labels[:, :-1]], dim=1)  # shift right
        decoder_input = decoder_input.masked_fill(decoder_input == -100, self.sonar_decoder.config.pad_token_id)
        pred = pred.to(self.sonar_decoder.dtype)
        decoder = self.sonar_decoder
        if self._checkpoints_frozen_decoder() and torch.is_grad_enabled():
            # The frozen decoder runs in eval mode, where its layers never checkpoint themselves. Checkpoint it in
            # groups of sentences instead: backward then holds one group's activations, not the whole batch's. The
            # cross-entropy stays outside: it keeps only its gradients (`chunked_token_cross_entropy`).
            group = max(1, self.config.ce_chunk_size // decoder_input.shape[1])
            hidden = torch.cat([
                checkpoint(decoder.decoder_hidden_states, pred[i : i + group], decoder_input[i : i + group],
                           use_reentrant=False)
                for i in range(0, pred.shape[0], group)
            ])  # fmt: skip
        else:
            hidden = decoder.decoder_hidden_states(pred, decoder_input)  # (N, L, d)
        weight = decoder.lm_head.weight  # the last decoder layer may sit on another device than the LM head
        return chunked_token_cross_entropy(hidden.to(weight.device), weight, token_labels.to(weight.device),
                                           chunk_size=self.config.ce_chunk_size)  # fmt: skip

    def _checkpoints_frozen_decoder(self) -> bool:
        """Activation checkpointing is on and the SONAR decoder is frozen (so its own layers will not do it)."""
        enabled = any(getattr(layer, "gradient_checkpointing", False) for layer in self.model.layers)
        return enabled and not self.sonar_decoder.training

    # -- generation -----------------------------------------------------------------------------------------------

    def generate(self, prompts=None, generation_config: GenerationConfig | None = None, streamer=None, **kwargs):
        """Continue documents sentence by sentence; see `generation_sonar_llm.generate_sentences`.

        `prompts`: a string (split into sentences offline), a list of strings, a list of sentence lists, or
        embeddings (B, T, d) / a list of (T_i, d) tensors. Returns a `SonarLLMGenerateOutput` with `.sentences`,
        `.texts` and `.embeddings`.

        Settings merge as in transformers: `generation_config` overrides the saved `model.generation_config` only
        where it sets a value, and keyword options (`num_beams=1`, ...) override both.
        """
        # 1. merge the saved generation settings with this call's config and keyword overrides
        options = merge_generation_options(self.generation_config, generation_config, **kwargs)
        # 2. run the sentence loop (it checks every option first)
        return generate_sentences(self, prompts, streamer=streamer, **options)


def _on(count, device):
    """`num_items_in_batch` may be an int or a tensor on another device."""
    return count.to(device) if torch.is_tensor(count) else count


SonarLLMConfig.register_for_auto_class()
SonarLLMForCausalSentenceModeling.register_for_auto_class("AutoModel")

__all__ = [
    "chunked_token_cross_entropy",
    "append_eos_target",
    "check_countable_labels",
    "token_weighted_squared_error",
    "last_label_end",
    "SonarLLMForCausalSentenceModeling",
    "SonarLLMPreTrainedModel",
    "SonarLLMOutput",
]
