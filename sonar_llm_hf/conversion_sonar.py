"""fairseq2 SONAR text encoder/decoder checkpoints -> `SonarTextEncoder` / `SonarTextDecoder` folders.

The published files (`sonar_text_encoder.pt`, `sonar_text_decoder.pt`) are `{"model": fairseq2 state dict}`. Keys
are renamed by the regex tables below, the four special-token rows of the embeddings and LM head are permuted to the
HF NLLB order, the config is inferred from tensor shapes (heads from an option), and the result is loaded strictly.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .configuration_sonar_text import SonarTextDecoderConfig, SonarTextEncoderConfig
from .conversion_utils import (
    ConversionError,
    atomic_output_dir,
    check_against_model,
    load_checkpoint,
    map_keys,
    parse_dtype,
    permute_special_rows,
)
from .modeling_sonar_text import SonarTextDecoder, SonarTextEncoder

# `None` drops a key.
ENCODER_KEY_MAPPING = {
    r"encoder_frontend\.embed\.weight": r"encoder.embed_tokens.weight",
    r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)": r"encoder.layers.\1.self_attn.\2_proj.\3",
    r"encoder\.layers\.(\d+)\.self_attn\.output_proj\.(weight|bias)": r"encoder.layers.\1.self_attn.out_proj.\2",
    r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)": r"encoder.layers.\1.self_attn_layer_norm.\2",
    r"encoder\.layers\.(\d+)\.ffn\.inner_proj\.(weight|bias)": r"encoder.layers.\1.fc1.\2",
    r"encoder\.layers\.(\d+)\.ffn\.output_proj\.(weight|bias)": r"encoder.layers.\1.fc2.\2",
    r"encoder\.layers\.(\d+)\.ffn_layer_norm\.(weight|bias)": r"encoder.layers.\1.final_layer_norm.\2",
    r"layer_norm\.(weight|bias)": r"encoder.layer_norm.\1",  # fairseq2 keeps the final norm at model level
}

DECODER_KEY_MAPPING = {
    r"decoder_frontend\.embed\.weight": r"decoder.embed_tokens.weight",
    r"final_proj\.weight": r"lm_head.weight",
    r"decoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)": r"decoder.layers.\1.self_attn.\2_proj.\3",
    r"decoder\.layers\.(\d+)\.self_attn\.output_proj\.(weight|bias)": r"decoder.layers.\1.self_attn.out_proj.\2",
    r"decoder\.layers\.(\d+)\.encoder_decoder_attn\.(q|k|v)_proj\.(weight|bias)": r"decoder.layers.\1.encoder_attn.\2_proj.\3",
    r"decoder\.layers\.(\d+)\.encoder_decoder_attn\.output_proj\.(weight|bias)": r"decoder.layers.\1.encoder_attn.out_proj.\2",
    r"decoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)": r"decoder.layers.\1.self_attn_layer_norm.\2",
    r"decoder\.layers\.(\d+)\.encoder_decoder_attn_layer_norm\.(weight|bias)": r"decoder.layers.\1.encoder_attn_layer_norm.\2",
    r"decoder\.layers\.(\d+)\.ffn\.inner_proj\.(weight|bias)": r"decoder.layers.\1.fc1.\2",
    r"decoder\.layers\.(\d+)\.ffn\.output_proj\.(weight|bias)": r"decoder.layers.\1.fc2.\2",
    r"decoder\.layers\.(\d+)\.ffn_layer_norm\.(weight|bias)": r"decoder.layers.\1.final_layer_norm.\2",
    r"decoder\.layer_norm\.(weight|bias)": r"decoder.layer_norm.\1",
}  # fmt: skip

_PERMUTED = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}


def unwrap_model_state(checkpoint, path) -> dict[str, torch.Tensor]:
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or not isinstance(checkpoint["model"], dict):
        keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(
            f"{path} is not a SONAR fairseq2 checkpoint: expected {{'model': state_dict}}, found {keys}."
        )
    return checkpoint["model"]


def _count_layers(keys, prefix: str) -> int:
    indices = {int(m.group(1)) for k in keys if (m := re.match(rf"{prefix}\.layers\.(\d+)\.", k))}
    if indices != set(range(len(indices))):
        raise ConversionError(f"Layer indices under `{prefix}.layers` are not contiguous: {sorted(indices)}.")
    return len(indices)


def _require(state: dict, key: str, what: str) -> torch.Tensor:
    if key not in state:
        raise ConversionError(f"{what} checkpoint lacks `{key}`; is it a SONAR text {what.lower()}?")
    return state[key]


def infer_encoder_config(state: dict, num_heads: int = 16) -> SonarTextEncoderConfig:
    embed = _require(state, "encoder_frontend.embed.weight", "Encoder")
    ffn = _require(state, "encoder.layers.0.ffn.inner_proj.weight", "Encoder")
    vocab, dim = embed.shape
    _check_heads(dim, num_heads)
    return SonarTextEncoderConfig(
        vocab_size=vocab, d_model=dim, encoder_layers=_count_layers(state, "encoder"), encoder_ffn_dim=ffn.shape[0],
        encoder_attention_heads=num_heads, decoder_attention_heads=num_heads,
    )  # fmt: skip


def infer_decoder_config(state: dict, num_heads: int = 16) -> SonarTextDecoderConfig:
    embed = _require(state, "decoder_frontend.embed.weight", "Decoder")
    ffn = _require(state, "decoder.layers.0.ffn.inner_proj.weight", "Decoder")
    vocab, dim = embed.shape
    _check_heads(dim, num_heads)
    return SonarTextDecoderConfig(
        vocab_size=vocab, d_model=dim, decoder_layers=_count_layers(state, "decoder"), decoder_ffn_dim=ffn.shape[0],
        decoder_attention_heads=num_heads, encoder_attention_heads=num_heads,
    )  # fmt: skip


def _check_heads(dim: int, num_heads: int) -> None:
    if num_heads < 1 or dim % num_heads:
        raise ConversionError(f"--num-heads {num_heads} does not divide the model width {dim}.")


def convert_state(state: dict, mapping: dict, what: str) -> dict[str, torch.Tensor]:
    converted = map_keys(state, mapping, what)
    return {k: permute_special_rows(v) if k in _PERMUTED else v for k, v in converted.items()}


def build_encoder(state: dict, num_heads: int = 16, dtype: torch.dtype | None = None) -> SonarTextEncoder:
    """A `SonarTextEncoder` holding a fairseq2 encoder state dict (strictly checked)."""
    config = infer_encoder_config(state, num_heads)
    converted = convert_state(state, ENCODER_KEY_MAPPING, "Encoder")
    return _load_strict(SonarTextEncoder, config, converted, "Encoder", dtype)


def build_decoder(state: dict, num_heads: int = 16, dtype: torch.dtype | None = None) -> SonarTextDecoder:
    """A `SonarTextDecoder` holding a fairseq2 decoder state dict (strictly checked, head tied to the embedding)."""
    config = infer_decoder_config(state, num_heads)
    converted = convert_state(state, DECODER_KEY_MAPPING, "Decoder")
    head = converted.get("lm_head.weight")
    if head is not None and not torch.equal(head, converted.get("decoder.embed_tokens.weight", head)):
        raise ConversionError(
            "Decoder `final_proj.weight` differs from `decoder_frontend.embed.weight`; SONAR ties them, so this "
            "checkpoint is not a SONAR text decoder (or was modified)."
        )
    return _load_strict(SonarTextDecoder, config, converted, "Decoder", dtype)


def _load_strict(cls, config, converted, what, dtype):
    with torch.device("meta"):
        skeleton = cls(config)
    check_against_model(converted, skeleton, f"{what} checkpoint")
    model = cls(config)
    model.load_state_dict(converted, strict=True)
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def convert_sonar(
    output,
    encoder_path=None,
    decoder_path=None,
    tokenizer_path=None,
    num_heads: int = 16,
    dtype: str | None = None,
) -> dict[str, Path]:
    """Convert the published checkpoints into `output/encoder` and `output/decoder`, verified by reloading."""
    from transformers import AutoModel

    from .tokenization_sonar import build_sonar_tokenizer

    if encoder_path is None and decoder_path is None:
        raise ConversionError("Give --encoder, --decoder or both.")
    torch_dtype = parse_dtype(dtype)
    tokenizer = build_sonar_tokenizer(tokenizer_path) if tokenizer_path else None
    models = {}
    if encoder_path is not None:
        models["encoder"] = build_encoder(unwrap_model_state(load_checkpoint(encoder_path), encoder_path), num_heads, torch_dtype)
    if decoder_path is not None:
        models["decoder"] = build_decoder(unwrap_model_state(load_checkpoint(decoder_path), decoder_path), num_heads, torch_dtype)
    written = {}
    output = Path(output)
    for name, model in models.items():
        target = output / name
        with atomic_output_dir(target, is_same_model=lambda p, n=name: _holds_sonar(p, n)) as staging:
            model.save_pretrained(staging)
            if tokenizer is not None:
                tokenizer.save_pretrained(staging)
            _verify_reload(model, staging, AutoModel)
        written[name] = target
    return written


def _holds_sonar(path: Path, name: str) -> bool:
    import json

    config = path / "config.json"
    return config.exists() and json.loads(config.read_text()).get("model_type") == f"sonar_text_{name}"


def _verify_reload(model, folder: Path, auto_model) -> None:
    """Reload the written folder and check it computes exactly what the converted model does."""
    reloaded = auto_model.from_pretrained(folder, dtype=model.dtype).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, model.config.vocab_size, (2, 7), generator=generator)
    with torch.no_grad():
        if isinstance(model, SonarTextEncoder):
            same = torch.equal(model(ids).pooler_output, reloaded(ids).pooler_output)
        else:
            memory = torch.randn(2, model.config.d_model, generator=generator).to(model.dtype)
            same = torch.equal(
                model(sentence_embeddings=memory, decoder_input_ids=ids).logits,
                reloaded(sentence_embeddings=memory, decoder_input_ids=ids).logits,
            )
    if not same:
        raise ConversionError(f"Reloading {folder} did not reproduce the converted model's outputs.")
