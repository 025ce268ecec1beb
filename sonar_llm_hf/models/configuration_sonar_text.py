"""Configurations of the SONAR text encoder and decoder (Meta's `text_sonar_basic_{encoder,decoder}`).

Both are plain M2M100 configurations with SONAR's defaults: SONAR's text models are NLLB-200 1.3B halves
(d_model 1024, 24 layers, 16 heads, FFN 8192, ReLU, scaled embeddings, sinusoidal positions). Only the model type
differs, so that `AutoModel` can map each folder to the right class. fairseq2 name -> this name:
`model_dim` -> `d_model`, `num_encoder_layers`/`num_decoder_layers` -> `encoder_layers`/`decoder_layers`,
`num_encoder_attn_heads` -> `encoder_attention_heads`, `ffn_inner_dim` -> `*_ffn_dim`, `max_seq_len` ->
`max_position_embeddings` (the encoder's 514 already includes fairseq2's `pad_idx + 1` legacy offset).
"""

import math
from numbers import Integral, Real

import torch
from huggingface_hub.dataclasses import strict
from transformers import M2M100Config

# Checks of decoding and generation options, shared by `SonarTextDecoder.decode` and SONAR-LLM's `generate`.
#
# A bad option must stop the call before any work, with an error that names the option, its value and what to pass
# instead. Left alone, `num_beams=0` dies in a division deep in the search, `top_p=2.0` or `max_new_sentences=-1` run
# and silently mean something else, and a `max_length` past the decoder's positions would be cut without a word.


def check_integer(name: str, value, minimum: int, maximum: int | None = None, allow_none: bool = False, hint=""):
    """Raise unless `value` is an integer (not a bool) in [minimum, maximum] (or None when `allow_none`)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, Integral):
        kind = "an integer or None" if allow_none else "an integer"
        raise TypeError(f"`{name}` must be {kind}, got {value!r} ({type(value).__name__}).{hint}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"`{name}` must be {bound}, got {value}.{hint}")


def check_bool(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False{' (or None)' if allow_none else ''}, got {value!r}.")


def check_max_length(max_length, positions: int) -> None:
    """`max_length` counts the decoder prompt `[</s>, lang]`, so 3 is the least that leaves room for a token; it may
    not exceed the decoder's positions (a larger value is an error, never a silent clamp)."""
    hint = " It counts the decoder prompt `[</s>, lang]`: 3 leaves room for one token."
    check_integer("max_length", max_length, 3, hint=hint)
    if max_length > positions:
        raise ValueError(
            f"`max_length` is {max_length} but the SONAR decoder has {positions} positions; pass "
            f"`max_length` <= {positions} (the prompt `[</s>, lang]` included)."
        )


def check_encoder_length(max_length, positions: int) -> int:
    """`max_length` for the encoder (None: all its positions); more than its positions is an error."""
    if max_length is None:
        return positions
    check_integer("max_length", max_length, 3, hint=" It counts `[lang]` and `</s>`: 3 leaves room for one piece.")
    if max_length > positions:
        raise ValueError(f"`max_length` is {max_length} but the SONAR encoder has {positions} positions.")
    return max_length


def check_decoder_positions(length: int, positions: int) -> None:
    """A decoder step that would reach past the decoder's positions (M2M100 would extend its table silently)."""
    if length > positions:
        raise ValueError(
            f"The SONAR decoder would run {length} positions but has {positions}; pass `max_length` <= {positions} "
            f"(or `max_new_tokens` so that the prompt and the new tokens fit in {positions})."
        )


def check_sampling(temperature=None, top_p=None, top_k=None) -> None:
    """Sampling settings as transformers' logits warpers accept them (None: not set)."""
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, Real) or not math.isfinite(temperature):
            raise TypeError(f"`temperature` must be a finite number, got {temperature!r}.")
        if temperature <= 0:
            raise ValueError(
                f"`temperature` must be > 0, got {temperature}. For deterministic output use `do_sample=False`."
            )
    if top_p is not None:
        if isinstance(top_p, bool) or not isinstance(top_p, Real):
            raise TypeError(f"`top_p` must be a number in (0, 1], got {top_p!r}.")
        if not 0 < top_p <= 1:
            raise ValueError(f"`top_p` must lie in (0, 1] (1 keeps every token), got {top_p}.")
    check_integer("top_k", top_k, 0, allow_none=True, hint=" 0 or None keeps every token.")


def check_decoding(num_beams, max_length, positions: int, batch_size, do_sample=False, **sampling) -> None:
    """Every option of `SonarTextDecoder.decode` that could fail late or silently mean something else."""
    check_integer("num_beams", num_beams, 1, hint=" Use 1 for greedy decoding, 5 for SONAR's beam search.")
    check_max_length(max_length, positions)
    check_integer("batch_size", batch_size, 1)
    check_bool("do_sample", do_sample)
    check_sampling(**{key: sampling.get(key) for key in ("temperature", "top_p", "top_k")})


def check_token_labels(labels: torch.Tensor, vocab_size: int, name: str = "labels") -> None:
    """Token labels must be integer ids of the vocabulary, or -100 (ignored); a bare `IndexError` from the loss would
    say neither which id nor why."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of token ids, got {type(labels).__name__}.")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"`{name}` must hold integer token ids, got dtype {labels.dtype}.")
    bad = (labels != -100) & ((labels < 0) | (labels >= vocab_size))
    if labels.device.type != "meta" and bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0].tolist())
        raise ValueError(
            f"`{name}` holds token id {int(labels[where])} at index {where}, outside the vocabulary of {vocab_size} "
            f"ids (0 to {vocab_size - 1}); {int(bad.sum())} label(s) are out of range. Use ids from this model's "
            "tokenizer, and -100 for positions without a target."
        )


@strict
class SonarTextEncoderConfig(M2M100Config):
    r"""
    Configuration of [`SonarTextEncoder`]: an M2M100 encoder followed by masked mean pooling.

    Example:

    ```python
    >>> from sonar_llm_hf import SonarTextEncoderConfig, SonarTextEncoder
    >>> model = SonarTextEncoder(SonarTextEncoderConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4,
    ...                                                 encoder_ffn_dim=64, vocab_size=500))
    ```
    """

    model_type = "sonar_text_encoder"

    vocab_size: int = 256206  # 256,000 SentencePiece pieces + <pad> + 202 languages + 3 data tags (fairseq2 layout)
    max_position_embeddings: int = 514  # 512 tokens + fairseq2's legacy pad_idx + 1
    encoder_layers: int = 24
    encoder_ffn_dim: int = 8192
    encoder_attention_heads: int = 16
    encoder_layerdrop: float | int = 0.0
    is_encoder_decoder: bool = False
    use_cache: bool = False


@strict
class SonarTextDecoderConfig(M2M100Config):
    r"""
    Configuration of [`SonarTextDecoder`]: an M2M100 decoder whose cross-attention memory is one sentence embedding.

    `is_encoder_decoder` stays True: for `generate`, the "encoder" is the identity map from a (N, d) sentence
    embedding to a length-1 memory (N, 1, d), which lets transformers expand it for beams and cache its keys.

    Example:

    ```python
    >>> from sonar_llm_hf import SonarTextDecoderConfig, SonarTextDecoder
    >>> model = SonarTextDecoder(SonarTextDecoderConfig(d_model=32, decoder_layers=2, decoder_attention_heads=4,
    ...                                                 decoder_ffn_dim=64, vocab_size=500))
    ```
    """

    model_type = "sonar_text_decoder"

    vocab_size: int = 256206
    max_position_embeddings: int = 512
    decoder_layers: int = 24
    decoder_ffn_dim: int = 8192
    decoder_attention_heads: int = 16
    decoder_layerdrop: float | int = 0.0
    # Only used by the M2M100 base class; the decoder has no token encoder.
    encoder_layers: int = 0
