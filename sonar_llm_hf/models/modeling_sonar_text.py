"""SONAR text encoder and decoder as transformers models.

SONAR (Meta, arXiv 2308.11466) maps a sentence in any of 202 languages to one 1024-d vector and back. Its text
halves are exactly NLLB-200's M2M100 encoder and decoder, so both classes here are thin wrappers around
transformers' `M2M100Encoder` / `M2M100Decoder`:

- `SonarTextEncoder`: M2M100 encoder + masked mean pooling -> `pooler_output` (N, d).
- `SonarTextDecoder`: M2M100 decoder + LM head tied to the decoder embedding, cross-attending to a length-1 memory
  (the sentence embedding). It is a `GenerationMixin` model whose "encoder" is the identity on embeddings, so
  transformers' `generate` (greedy, beam, sampling, KV cache) works unchanged.

Token ids follow the HF NLLB layout (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3); fairseq2 checkpoints are permuted on
conversion (see `conversion/convert_sonar_to_hf.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers import GenerationMixin
from transformers.cache_utils import EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, Seq2SeqLMOutput
from transformers.models.m2m_100.modeling_m2m_100 import (
    M2M100Attention,
    M2M100Decoder,
    M2M100Encoder,
    M2M100PreTrainedModel,
    shift_tokens_right,
)
from transformers.utils import can_return_tuple, logging

from .configuration_sonar_text import (
    SonarTextDecoderConfig,
    SonarTextEncoderConfig,
    check_decoder_positions,
    check_encoder_length,
    check_token_labels,
)
from .generation_sonar_text import SonarDecodingSettings, fairseq2_beam_search
from .tokenization_sonar import (
    SonarTokenizerMixin,
    check_language,
    decode_ids,
    encode_source,
    execution_device,
    suppressed_token_ids,
    validate_texts,
)

logger = logging.get_logger(__name__)

# fairseq2's pooler divides by the sequence length plus this epsilon (sonar `EncoderOutputPooler`).
_POOLING_EPS = 1e-7


def masked_mean_pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens, the language token and `</s>` included, computed as fairseq2 does."""
    if attention_mask is None:
        attention_mask = hidden_states.new_ones(hidden_states.shape[:2])
    mask = attention_mask.to(hidden_states.device, hidden_states.dtype).unsqueeze(-1)  # (N, T, 1)
    summed = (hidden_states * mask).sum(dim=1)  # (N, d)
    lengths = mask.sum(dim=1)  # (N, 1)
    return summed * (1.0 / (lengths + _POOLING_EPS))


def check_sentence_embeddings(embeddings: torch.Tensor, dim: int, name: str = "sentence_embeddings") -> None:
    """Refuse embeddings that would silently produce garbage: wrong width, non-float, NaN or inf."""
    if not isinstance(embeddings, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(embeddings).__name__}.")
    if not embeddings.is_floating_point():
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {embeddings.dtype}.")
    if embeddings.shape[-1] != dim:
        raise ValueError(
            f"`{name}` has width {embeddings.shape[-1]} but this model expects {dim} "
            f"(shape {tuple(embeddings.shape)}). Pass SONAR embeddings of size {dim}."
        )
    if embeddings.device.type != "meta" and not torch.isfinite(embeddings).all():
        raise ValueError(f"`{name}` contains NaN or inf values; SONAR cannot decode them.")


class SonarTextPreTrainedModel(SonarTokenizerMixin, M2M100PreTrainedModel):
    """Shares M2M100's weight init (which also rebuilds the sinusoidal position tables after meta-device init), and
    loads and saves the tokenizer with the weights (`tokenization_sonar.py`)."""

    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["M2M100EncoderLayer", "M2M100DecoderLayer"]


class SonarTextEncoder(SonarTextPreTrainedModel):
    r"""
    SONAR text encoder: `model(input_ids, attention_mask).pooler_output` is the (N, d) sentence embedding.

    Example:

    ```python
    >>> from sonar_llm_hf import SonarTextEncoder
    >>> encoder = SonarTextEncoder.from_pretrained("path/to/sonar/encoder")
    >>> embeddings = encoder.encode(["My name is SONAR."], lang="eng_Latn")  # (1, 1024)
    ```
    """

    config_class = SonarTextEncoderConfig
    main_input_name = "input_ids"

    def __init__(self, config: SonarTextEncoderConfig):
        super().__init__(config)
        self.encoder = M2M100Encoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.encoder.embed_tokens = value

    @can_return_tuple  # `return_dict=False` (or `config.return_dict=False`) gives a tuple, as in transformers
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        if input_ids is not None and input_ids.shape[-1] > self.config.max_position_embeddings:
            raise ValueError(
                f"Input has {input_ids.shape[-1]} tokens but SONAR encodes at most "
                f"{self.config.max_position_embeddings}; truncate it (keeping `</s>`) or split the text."
            )
        if inputs_embeds is not None:
            inputs_embeds = inputs_embeds.to(self.dtype)  # token embeddings in the model's dtype (bf16/fp16 too)
        outputs = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, return_dict=True, **kwargs
        )
        pooled = masked_mean_pool(outputs.last_hidden_state, attention_mask)  # (N, T, d) -> (N, d)
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=pooled,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @torch.no_grad()
    def encode(
        self,
        texts: str | Sequence[str],
        lang: str = "eng_Latn",
        batch_size: int = 32,
        tokenizer=None,
        progress_bar: bool | None = None,
        max_length: int | None = None,
        truncation: bool = True,
    ) -> torch.Tensor:
        """Embed sentences, returning (N, d) in input order.

        Texts are sorted by token length and batched so that padding stays small; `progress_bar=None` shows a bar
        only for inputs of more than 10 batches. Texts over `max_length` tokens (the encoder's positions) are
        truncated with `</s>` kept, with one warning per call counting the tokens dropped; `truncation=False`
        raises instead. For CPU speed, `sonar_llm_hf.speed.prepare_for_inference(model)` first.
        """
        tokenizer = self._tokenizer_or_raise(tokenizer)
        texts = validate_texts(texts)
        lang = check_language(lang)
        max_length = check_encoder_length(max_length, self.config.max_position_embeddings)
        token_ids = encode_source(tokenizer, texts, lang, max_length=max_length, truncation=truncation)
        return self.encode_token_ids(token_ids, batch_size=batch_size, progress_bar=progress_bar)

    @torch.no_grad()
    def encode_token_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        batch_size: int = 32,
        progress_bar: bool | None = None,
    ) -> torch.Tensor:
        """Embed already tokenized sentences (`[lang] pieces </s>`), batching them by length."""
        device = execution_device(self)
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]), reverse=True)
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        if progress_bar is None:
            progress_bar = len(batches) > 10
        result = torch.empty(len(token_ids), self.config.d_model, dtype=self.dtype, device=device)
        for batch in logging.tqdm(batches, desc="SONAR encode", disable=not progress_bar):
            width = max(len(token_ids[i]) for i in batch)
            ids = torch.full((len(batch), width), self.config.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(token_ids[i])] = torch.tensor(token_ids[i])
                mask[row, : len(token_ids[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            pooled = self(input_ids=ids, attention_mask=mask, return_dict=True).pooler_output
            result[torch.tensor(batch, device=device)] = pooled.to(device)  # the last layer may sit elsewhere
        return result


class SonarSentenceMemory(nn.Module):
    """The decoder's "encoder": it turns sentence embeddings (N, d) into a length-1 memory (N, 1, d).

    Having it lets `generate` treat the decoder as an encoder-decoder model, so beams expand the memory and the
    cross-attention keys are cached once.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, sentence_embeddings: torch.Tensor, **kwargs) -> BaseModelOutput:
        check_sentence_embeddings(sentence_embeddings, self.dim)
        if sentence_embeddings.dim() != 2:
            raise ValueError(
                f"`sentence_embeddings` must have shape (N, {self.dim}), got {tuple(sentence_embeddings.shape)}."
            )
        return BaseModelOutput(last_hidden_state=sentence_embeddings.unsqueeze(1))  # (N, d) -> (N, 1, d)


class SonarSentenceCrossAttention(M2M100Attention):
    """Cross-attention to a one-vector memory, computed without queries.

    With a single key, softmax gives it weight exactly 1, so the output is `out_proj(v_proj(memory))` for every
    target position: the same numbers as full attention, without the query projection and the attention itself
    (about 9% of a decoder layer's products). The result is computed once per memory and kept in the cache's
    cross-attention slot. Longer memories, masks and attention dropout in training take M2M100's own path.
    """

    def forward(self, hidden_states, key_value_states=None, cache=None, attention_mask=None, **kwargs):
        single = (
            key_value_states is not None
            and key_value_states.shape[1] == 1
            and attention_mask is None
            and (not self.training or self.dropout == 0)
        )
        if not single:
            return super().forward(
                hidden_states, key_value_states, cache=cache, attention_mask=attention_mask, **kwargs
            )
        cross_cache = cache.cross_attention_cache if isinstance(cache, EncoderDecoderCache) else None
        if cross_cache is not None and cache.is_updated.get(self.layer_idx):
            output = cross_cache.layers[self.layer_idx].keys[:, 0]  # (N, 1, d)
        else:
            output = self.out_proj(self.v_proj(key_value_states))  # (N, 1, d)
            if cross_cache is not None:
                cross_cache.update(output.unsqueeze(1), output.unsqueeze(1), self.layer_idx)
                cache.is_updated[self.layer_idx] = True
        batch, length = hidden_states.shape[:2]
        weights = hidden_states.new_ones(1, 1, 1, 1).expand(batch, self.num_heads, length, 1)
        return output.expand(batch, length, output.shape[-1]), weights


class SonarTextDecoder(SonarTextPreTrainedModel, GenerationMixin):
    r"""
    SONAR text decoder: turns sentence embeddings back into text.

    `model(sentence_embeddings=E, decoder_input_ids=ids, labels=...)` returns logits and loss; `generate` is
    transformers' own. Decoder prompts are `[</s>, lang]`, labels `[lang] pieces </s>` (fairseq2 teacher forcing).

    Example:

    ```python
    >>> from sonar_llm_hf import SonarTextDecoder
    >>> decoder = SonarTextDecoder.from_pretrained("path/to/sonar/decoder")
    >>> decoder.decode(embeddings, lang="fra_Latn")  # list[str]
    ```
    """

    config_class = SonarTextDecoderConfig
    main_input_name = "sentence_embeddings"
    _tied_weights_keys = {"lm_head.weight": "decoder.embed_tokens.weight"}

    def __init__(self, config: SonarTextDecoderConfig):
        super().__init__(config)
        self.decoder = M2M100Decoder(config)
        for index, layer in enumerate(self.decoder.layers):
            layer.encoder_attn = SonarSentenceCrossAttention(
                config.d_model, config.decoder_attention_heads, dropout=config.attention_dropout, is_decoder=True,
                config=config, layer_idx=index,
            )  # fmt: skip
        self.memory = SonarSentenceMemory(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_encoder(self, modality: str | None = None) -> nn.Module:
        return self.memory

    def get_decoder(self) -> nn.Module:
        return self.decoder

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.decoder.embed_tokens = value

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def decoder_hidden_states(
        self,
        sentence_embeddings: torch.Tensor,
        decoder_input_ids: torch.LongTensor,
        decoder_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final decoder states (N, L, d) before the LM head, for losses that project them chunk by chunk."""
        check_sentence_embeddings(sentence_embeddings, self.config.d_model)
        memory = sentence_embeddings.to(self.dtype).unsqueeze(1)  # (N, d) -> (N, 1, d), in the model's dtype
        return self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=memory,
            return_dict=True,
        ).last_hidden_state

    @can_return_tuple
    def forward(
        self,
        sentence_embeddings: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        cache=None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        r"""
        sentence_embeddings (`torch.Tensor` of shape `(N, d)`): the sentences to decode.
        decoder_input_ids (`torch.LongTensor` of shape `(N, L)`): `[</s>, lang, pieces...]`; built from `labels` by
            shifting right when omitted.
        labels (`torch.LongTensor` of shape `(N, L)`): `[lang, pieces..., </s>]`, padded with -100.
        """
        # `attention_mask` would be the memory's mask; a one-vector memory needs none.
        if encoder_outputs is None:
            if sentence_embeddings is None:
                raise ValueError("Pass `sentence_embeddings` of shape (N, d) (or `encoder_outputs`).")
            encoder_outputs = self.memory(sentence_embeddings)
        memory = encoder_outputs[0] if isinstance(encoder_outputs, tuple) else encoder_outputs.last_hidden_state
        memory = memory.to(self.dtype)  # fp32 embeddings feed a bf16/fp16 decoder
        if labels is not None:
            check_token_labels(labels, self.config.vocab_size)
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = shift_tokens_right(
                labels, self.config.pad_token_id, self.config.decoder_start_token_id
            )
        tokens = decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds
        if tokens is not None:  # positions past the decoder's would be extrapolated silently
            check_decoder_positions(tokens.shape[1] + (cache.get_seq_length() if cache is not None else 0),
                                    self.config.max_position_embeddings)  # fmt: skip
        outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=memory,
            cache=cache,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)  # (N, L, d) -> (N, L, V)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.to(logits.device).long().reshape(-1),
                ignore_index=-100,
            )
        return Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            decoder_hidden_states=outputs.hidden_states,
            decoder_attentions=outputs.attentions,
            cross_attentions=getattr(outputs, "cross_attentions", None),
            encoder_last_hidden_state=memory,
        )

    def decoder_prompt(self, batch_size: int, lang: str, tokenizer=None) -> torch.LongTensor:
        """`[</s>, lang]` for each row: fairseq2's target prefix in HF ids."""
        tokenizer = self._tokenizer_or_raise(tokenizer)
        lang_id = tokenizer.convert_tokens_to_ids(check_language(lang))
        prompt = [self.config.decoder_start_token_id, lang_id]
        return torch.tensor([prompt] * batch_size, dtype=torch.long, device=execution_device(self))

    @torch.no_grad()
    def decode(
        self,
        embeddings: torch.Tensor,
        lang: str = "eng_Latn",
        settings: SonarDecodingSettings | None = None,
        tokenizer=None,
        return_token_ids: bool = False,
        progress_bar: bool | None = None,
        **options,
    ) -> list[str] | tuple[list[str], list[list[int]]]:
        """Decode (N, d) embeddings into N sentences in `lang`.

        `settings` (a `SonarDecodingSettings`) and `options` (its fields by name, e.g. `num_beams=1`, and any
        other option of transformers' `generate`, e.g. `top_p=0.9`) say how; the defaults follow SONAR's
        `EmbeddingToTextModelPipeline` as SONAR-LLM calls it: beam 5 with fairseq2's own search and scoring
        (`generation_sonar_text.py`), length penalty 1, `max_length` positions counting the `[</s>, lang]` prompt,
        `</s>` forced at the last one. Greedy decoding and sampling use `generate`. Ids the tokenizer cannot turn
        into text (padding, `<mask>`, rows past its vocabulary) are never generated. With `return_token_ids=True`,
        also returns the generated ids after the prompt. For CPU speed, `sonar_llm_hf.speed.prepare_for_inference`.
        """
        tokenizer = self._tokenizer_or_raise(tokenizer)
        settings = SonarDecodingSettings.build(settings, **options)
        settings.validate(self.config.max_position_embeddings)
        if isinstance(embeddings, torch.Tensor) and embeddings.dim() == 1:
            embeddings = embeddings.unsqueeze(0)
        check_sentence_embeddings(embeddings, self.config.d_model, name="embeddings")
        if embeddings.dim() != 2:
            raise ValueError(
                f"`embeddings` must have shape (N, {self.config.d_model}), got {tuple(embeddings.shape)}."
            )
        embeddings = embeddings.to(device=execution_device(self), dtype=self.dtype)
        suppress = suppressed_token_ids(tokenizer, self.config.vocab_size)
        texts, generated = [], []
        batches = range(0, embeddings.shape[0], settings.batch_size)
        if progress_bar is None:
            progress_bar = len(batches) > 10
        for start in logging.tqdm(batches, desc="SONAR decode", disable=not progress_bar):
            chunk = embeddings[start : start + settings.batch_size]
            prompt = self.decoder_prompt(chunk.shape[0], lang, tokenizer)
            if settings.uses_fairseq2_search:
                new_tokens, _ = fairseq2_beam_search(
                    self, chunk, prompt, beam_size=settings.num_beams, max_length=settings.max_length,
                    len_penalty=settings.len_penalty, unk_penalty=settings.unk_penalty, suppress_ids=suppress,
                )  # fmt: skip
            else:
                output = self.generate(sentence_embeddings=chunk, decoder_input_ids=prompt,
                                       **self._generate_options(settings, suppress))  # fmt: skip
                new_tokens = output[:, prompt.shape[1] :].tolist()
            new_tokens = [
                _strip_padding(row, self.config.pad_token_id, self.config.eos_token_id) for row in new_tokens
            ]
            texts.extend(decode_ids(tokenizer, new_tokens))
            generated.extend(new_tokens)
        return (texts, generated) if return_token_ids else texts

    def _generate_options(self, settings: SonarDecodingSettings, suppress: list[int]) -> dict:
        """transformers' `generate` options equivalent to fairseq2's pipeline, then the caller's own."""
        return {
            "num_beams": settings.num_beams,
            "do_sample": settings.do_sample,
            "max_length": settings.max_length,  # checked against the decoder's positions
            "length_penalty": settings.len_penalty,
            "early_stopping": True if settings.num_beams > 1 else None,
            "no_repeat_ngram_size": 0,
            "suppress_tokens": suppress,
            "pad_token_id": self.config.pad_token_id,
            "eos_token_id": self.config.eos_token_id,
            "decoder_start_token_id": self.config.decoder_start_token_id,
            "forced_bos_token_id": None,
            "forced_eos_token_id": self.config.eos_token_id,  # fairseq2 ends every hypothesis at the last position
            **settings.generate_kwargs,
        }


def _strip_padding(ids: list[int], pad_id: int, eos_id: int) -> list[int]:
    """Cut a generated row after its first `</s>` (beams of other rows may have run longer)."""
    if eos_id in ids:
        ids = ids[: ids.index(eos_id) + 1]
    return [token for token in ids if token != pad_id]


__all__ = [
    "SonarTextEncoder",
    "SonarTextDecoder",
    "SonarTextPreTrainedModel",
    "masked_mean_pool",
    "check_sentence_embeddings",
]

SonarTextEncoderConfig.register_for_auto_class()
SonarTextDecoderConfig.register_for_auto_class()
SonarTextEncoder.register_for_auto_class("AutoModel")
SonarTextDecoder.register_for_auto_class("AutoModel")
