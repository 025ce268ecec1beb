"""Configurations of the SONAR text encoder and decoder (Meta's `text_sonar_basic_{encoder,decoder}`).

Both are plain M2M100 configurations with SONAR's defaults: SONAR's text models are NLLB-200 1.3B halves
(d_model 1024, 24 layers, 16 heads, FFN 8192, ReLU, scaled embeddings, sinusoidal positions). Only the model type
differs, so that `AutoModel` can map each folder to the right class. fairseq2 name -> this name:
`model_dim` -> `d_model`, `num_encoder_layers`/`num_decoder_layers` -> `encoder_layers`/`decoder_layers`,
`num_encoder_attn_heads` -> `encoder_attention_heads`, `ffn_inner_dim` -> `*_ffn_dim`, `max_seq_len` ->
`max_position_embeddings` (the encoder's 514 already includes fairseq2's `pad_idx + 1` legacy offset).
"""

from huggingface_hub.dataclasses import strict
from transformers import M2M100Config


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
