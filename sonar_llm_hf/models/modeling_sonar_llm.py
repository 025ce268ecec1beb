"""SONAR-LLM (arXiv 2508.05305): a Llama decoder that predicts the next sentence as a SONAR embedding.

    sentence embeddings (B, T, 1024) -> sentence_in_proj -> Llama layers -> sentence_out_proj -> predictions (B, T, 1024)

Training pushes token cross-entropy through the frozen SONAR decoder: the prediction at position t-1 is the
decoder's cross-attention memory when teacher-forcing the tokens of sentence t. Generation decodes each prediction
to text with SONAR beam search (`generation_sonar_llm.py`). The frozen SONAR encoder and decoder are submodules and
live in the same checkpoint, so one folder is a complete model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import GenerationConfig, GenerationMixin, LlamaModel, PreTrainedModel
from transformers.models.m2m_100.modeling_m2m_100 import M2M100SinusoidalPositionalEmbedding
from transformers.utils import ModelOutput, logging

from .configuration_sonar_llm import SonarLLMConfig
from .generation_sonar_llm import DEFAULT_SENTENCE_GENERATION, generate_sentences
from .loss_sonar_llm import chunked_token_cross_entropy
from .loading_sonar import SonarTokenizerMixin
from .modeling_sonar_text import SonarTextDecoder, SonarTextEncoder, check_sentence_embeddings

logger = logging.get_logger(__name__)


@dataclass
class SonarLLMOutput(ModelOutput):
    """Outputs of [`SonarLLMForCausalSentenceModeling`].

    Args:
        loss: the training loss (see `SonarLLMConfig.loss_type`), `loss` first for `Trainer`.
        predicted_embeddings (B, T, d): position t predicts the embedding of sentence t + 1.
        cache: the backbone's key/value cache when `use_cache=True`.
        ce_loss, mse_loss: the loss terms, detached, for logging.
        num_target_tokens: how many tokens the cross-entropy averaged over.
    """

    loss: torch.FloatTensor | None = None
    predicted_embeddings: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
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
            table = module.get_embedding(module.num_positions + module.offset, module.embedding_dim, module.padding_idx)
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

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.sentence_in_proj = value

    def get_output_embeddings(self) -> None:
        return None  # no token vocabulary: outputs are embeddings

    def _after_loading(self) -> None:
        self._freeze_sonar()

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
        """Backbone pass only: predicted next-sentence embeddings (B, T, d), and the cache."""
        hidden = self.sentence_in_proj(sentence_embeddings)  # (B, T, d) -> (B, T, H)
        outputs = self.model(
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            **kwargs,
        )
        predicted = self.sentence_out_proj(outputs.last_hidden_state)  # (B, T, H) -> (B, T, d)
        return SonarLLMOutput(predicted_embeddings=predicted, cache=outputs.cache, hidden_states=outputs.hidden_states)

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
        sentence_embeddings (`torch.Tensor` of shape `(B, T, d)`): SONAR embeddings of each document's sentences.
        attention_mask (`torch.Tensor` of shape `(B, T)`): 1 for real sentences, 0 for padding.
        labels (`torch.LongTensor` of shape `(B, T, L)`): token ids of the same sentences, `[lang] pieces </s>`,
            padded with -100. Position t-1 predicts sentence t (the shift happens here, as in causal LMs), so
            `labels[:, 0]` is never a target; set it to -100 (as `SonarLLMDataCollator` does) so that `Trainer`'s
            token count, which covers every label, equals the number of targets.
        num_items_in_batch: target-token count of the whole accumulated batch (passed by `Trainer`); the loss is
            then a sum divided by it, so gradient accumulation equals one large batch.
        """
        self._check_inputs(sentence_embeddings, attention_mask, labels)
        if labels is not None and use_cache is None:
            use_cache = False  # training: Trainer only turns the cache off on the top-level config
        outputs = self.predict_next(
            sentence_embeddings, attention_mask, position_ids=position_ids, cache=cache, use_cache=use_cache, **kwargs
        )
        if labels is not None:
            self._add_loss(outputs, sentence_embeddings, attention_mask, labels, num_items_in_batch)
        return outputs

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

    def _add_loss(self, outputs, embeddings, attention_mask, labels, num_items_in_batch) -> None:
        """Cross-entropy through the frozen decoder (and/or MSE) for every position that has a next sentence."""
        predicted = outputs.predicted_embeddings
        # 1. pair position t-1 with sentence t
        targets = labels[:, 1:]  # (B, T-1, L)
        present = (targets != -100).any(dim=-1)  # (B, T-1)
        if attention_mask is not None:
            present &= attention_mask[:, 1:].bool()
        pred = predicted[:, :-1][present]  # (N, d)
        loss_type = self.config.loss_type
        loss = predicted.new_zeros((), dtype=torch.float32)
        if "ce" in loss_type:
            token_labels = targets[present]  # (N, L)
            ce_sum, count = self._decoder_cross_entropy(pred, token_labels)
            denominator = num_items_in_batch if num_items_in_batch is not None else count.clamp(min=1)
            if torch.is_tensor(denominator):
                denominator = denominator.to(ce_sum.device)
            ce = ce_sum / denominator
            loss = loss + ce
            outputs.ce_loss = ce.detach()
            outputs.num_target_tokens = count
        if "mse" in loss_type:
            target_embeddings = embeddings[:, 1:][present]  # (N, d)
            mse = nn.functional.mse_loss(pred.float(), target_embeddings.float())
            weight = self.config.mse_weight if loss_type == "ce+mse" else 1.0
            loss = loss + weight * mse
            outputs.mse_loss = mse.detach()
        outputs.loss = loss

    def _decoder_cross_entropy(self, pred: torch.Tensor, token_labels: torch.Tensor):
        """Teacher-forced token CE: decoder input `[</s>, lang, pieces]`, targets `[lang, pieces, </s>]`."""
        token_labels = token_labels.long()
        width = int((token_labels != -100).sum(dim=-1).max().item()) if token_labels.numel() else 0
        token_labels = token_labels[:, : max(width, 1)]  # drop all-padding columns
        if self.config.duplicate_final_eos_target:
            token_labels = _append_eos_target(token_labels, self.sonar_decoder.config.eos_token_id)
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
        return chunked_token_cross_entropy(hidden, decoder.lm_head.weight, token_labels, chunk_size=self.config.ce_chunk_size)

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
        """
        # 1. merge the saved generation settings with this call's overrides
        settings = (generation_config or self.generation_config).to_dict()
        unknown = set(kwargs) - set(DEFAULT_SENTENCE_GENERATION) - {"tokenizer", "lang"}
        if unknown:
            raise TypeError(f"Unknown generation option(s): {', '.join(sorted(unknown))}.")
        options = {key: settings.get(key, default) for key, default in DEFAULT_SENTENCE_GENERATION.items()}
        options.update(kwargs)
        if "lang" in options:
            options["prompt_lang"] = options.pop("lang")
        # 2. run the sentence loop
        return generate_sentences(self, prompts, streamer=streamer, **options)


def _append_eos_target(token_labels: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Add the reference script's extra `</s>` target after each sentence's `</s>` (its teacher-forcing quirk)."""
    extra = torch.full_like(token_labels[:, :1], -100)
    token_labels = torch.cat([token_labels, extra], dim=1)
    lengths = (token_labels != -100).sum(dim=-1)  # (N,)
    token_labels[torch.arange(token_labels.shape[0]), lengths] = eos_id
    return token_labels


SonarLLMConfig.register_for_auto_class()
SonarLLMForCausalSentenceModeling.register_for_auto_class("AutoModel")

__all__ = ["SonarLLMForCausalSentenceModeling", "SonarLLMPreTrainedModel", "SonarLLMOutput"]
