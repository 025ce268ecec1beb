"""fairseq2 SONAR text encoder/decoder checkpoints -> `SonarTextEncoder` / `SonarTextDecoder` folders.

The published files (`sonar_text_encoder.pt`, `sonar_text_decoder.pt`) are `{"model": fairseq2 state dict}`. Keys
are renamed by the regex tables `ORIGINAL_TO_CONVERTED_KEY_MAPPING` (REFERENCE.md §1.4), the four special-token rows
of the embeddings and LM head are permuted to the HF NLLB order, the config is inferred from tensor shapes (heads
from an option), and the result is loaded strictly.

- `prepare_encoder` / `prepare_decoder`: config + converted tensors, every key and shape checked against the
  architecture on the meta device (also runs on a full-size state dict of meta tensors).
- `build_encoder` / `build_decoder`: the same, materialised as an eval-mode model.
- `convert_sonar`: files in, verified folders out (the CLI is `conversion/convert_sonar_to_hf.py`); the encoder
  folder also loads as `SentenceTransformer(folder, trust_remote_code=True)`
  (`integrations/sentence_transformers.py`)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..integrations.sentence_transformers import write_sentence_transformers_files
from ..models.configuration_sonar_text import SonarTextDecoderConfig, SonarTextEncoderConfig
from ..models.modeling_sonar_text import SonarTextDecoder, SonarTextEncoder
from .checkpoints import (
    ConversionError,
    check_against_model,
    check_state_dict,
    load_checkpoint,
    map_keys,
    parse_dtype,
    permute_special_rows,
)
from .output import atomic_output_dirs

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
    r"decoder\.layers\.(\d+)\.encoder_decoder_attn\.(q|k|v)_proj\.(weight|bias)":
        r"decoder.layers.\1.encoder_attn.\2_proj.\3",
    r"decoder\.layers\.(\d+)\.encoder_decoder_attn\.output_proj\.(weight|bias)":
        r"decoder.layers.\1.encoder_attn.out_proj.\2",
    r"decoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)": r"decoder.layers.\1.self_attn_layer_norm.\2",
    r"decoder\.layers\.(\d+)\.encoder_decoder_attn_layer_norm\.(weight|bias)":
        r"decoder.layers.\1.encoder_attn_layer_norm.\2",
    r"decoder\.layers\.(\d+)\.ffn\.inner_proj\.(weight|bias)": r"decoder.layers.\1.fc1.\2",
    r"decoder\.layers\.(\d+)\.ffn\.output_proj\.(weight|bias)": r"decoder.layers.\1.fc2.\2",
    r"decoder\.layers\.(\d+)\.ffn_layer_norm\.(weight|bias)": r"decoder.layers.\1.final_layer_norm.\2",
    r"decoder\.layer_norm\.(weight|bias)": r"decoder.layer_norm.\1",
}  # fmt: skip

# One table per checkpoint kind (STYLE.md: rename keys from a regex table, not inline).
ORIGINAL_TO_CONVERTED_KEY_MAPPING = {"encoder": ENCODER_KEY_MAPPING, "decoder": DECODER_KEY_MAPPING}

# Token tables whose four special rows are reordered fs2 -> HF (`permute_special_rows`).
_PERMUTED = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}


def unwrap_model_state(checkpoint, path) -> dict[str, torch.Tensor]:
    """The fairseq2 state dict inside a published `{"model": state_dict}` file, checked to hold only tensors."""
    if not isinstance(checkpoint, dict) or "model" not in checkpoint or not isinstance(checkpoint["model"], dict):
        keys = list(checkpoint)[:8] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        hint = ""
        if isinstance(checkpoint, dict) and "model_state_dict" in checkpoint:
            hint = " It looks like a SONAR-LLM training checkpoint: use convert_sonar_llm_to_hf.py."
        raise ConversionError(
            f"{path} is not a SONAR fairseq2 checkpoint: expected {{'model': state_dict}}, found {keys}.{hint}"
        )
    return check_state_dict(checkpoint["model"], f"{path} ['model']")


def _count_layers(keys, prefix: str) -> int:
    indices = {int(m.group(1)) for k in keys if (m := re.match(rf"{prefix}\.layers\.(\d+)\.", k))}
    if indices != set(range(len(indices))):
        raise ConversionError(f"Layer indices under `{prefix}.layers` are not contiguous: {sorted(indices)}.")
    return len(indices)


def _require(state: dict, key: str, what: str, ndim: int = 2) -> torch.Tensor:
    if key not in state:
        other = "decoder" if what == "Encoder" else "encoder"
        hint = ""
        if f"{other}_frontend.embed.weight" in state:
            hint = f" (it has `{other}_frontend.embed.weight`: a SONAR {other}?)"
        raise ConversionError(f"{what} checkpoint lacks `{key}`; is it a SONAR text {what.lower()}?{hint}")
    tensor = state[key]
    if tensor.dim() != ndim:
        raise ConversionError(
            f"{what} checkpoint: `{key}` has shape {tuple(tensor.shape)}; expected {ndim} dimensions."
        )
    return tensor


def _infer(state: dict, kind: str, num_heads: int) -> dict:
    """vocab, width, depth and FFN size from the tensors; heads (invisible in the weights) from `num_heads`.

    The width is read from the embedding and cross-checked with the final layer norm (and, for the decoder, the
    vocabulary with `final_proj`), so a single odd tensor is named instead of making every other one look wrong.
    """
    what = kind.capitalize()
    embed_key, ffn_key = f"{kind}_frontend.embed.weight", f"{kind}.layers.0.ffn.inner_proj.weight"
    norm_key = "layer_norm.weight" if kind == "encoder" else "decoder.layer_norm.weight"
    embed = _require(state, embed_key, what)
    ffn = _require(state, ffn_key, what)
    norm = _require(state, norm_key, what, ndim=1)
    vocab, dim = embed.shape
    if norm.shape[0] != dim:
        raise ConversionError(
            f"{what} checkpoint: `{embed_key}` {tuple(embed.shape)} has width {dim} but `{norm_key}` has "
            f"{norm.shape[0]}; one of them is mis-shaped."
        )
    if kind == "decoder":
        head = _require(state, "final_proj.weight", what)
        if head.shape[0] != vocab:
            raise ConversionError(
                f"Decoder checkpoint: `{embed_key}` has {vocab} rows but `final_proj.weight` {head.shape[0]}; "
                "SONAR ties them, so one of them is mis-shaped."
            )
    _check_heads(dim, num_heads)
    layers = _count_layers(state, kind)
    return {
        "vocab_size": vocab, "d_model": dim, f"{kind}_layers": layers, f"{kind}_ffn_dim": ffn.shape[0],
        "encoder_attention_heads": num_heads, "decoder_attention_heads": num_heads,
        "_inferred": f"vocab {vocab} and width {dim} from `{embed_key}`, FFN {ffn.shape[0]} from `{ffn_key}`, "
                     f"{layers} layers, {num_heads} heads (--num-heads)",
    }  # fmt: skip


def infer_encoder_config(state: dict, num_heads: int = 16) -> SonarTextEncoderConfig:
    """The encoder's config from a fairseq2 state dict's shapes; heads from `num_heads`."""
    values = _infer(state, "encoder", num_heads)
    values.pop("_inferred")
    return SonarTextEncoderConfig(**values)


def infer_decoder_config(state: dict, num_heads: int = 16) -> SonarTextDecoderConfig:
    """The decoder's config from a fairseq2 state dict's shapes; heads from `num_heads`."""
    values = _infer(state, "decoder", num_heads)
    values.pop("_inferred")
    return SonarTextDecoderConfig(**values)


def _check_against(cls, config, converted, state, kind, sources) -> None:
    """Every key and shape against the architecture (on meta), saying what the config was inferred from."""
    with torch.device("meta"):
        skeleton = cls(config)
    try:
        mapping = ORIGINAL_TO_CONVERTED_KEY_MAPPING[kind]
        check_against_model(converted, skeleton, f"{kind.capitalize()} checkpoint", sources, mapping)
    except ConversionError as error:
        inferred = _infer(state, kind, config.encoder_attention_heads)["_inferred"]
        raise ConversionError(f"{error}. (Config inferred from the shapes: {inferred}.)") from None


def _check_heads(dim: int, num_heads: int) -> None:
    if not isinstance(num_heads, int) or num_heads < 1 or dim % num_heads:
        raise ConversionError(f"--num-heads {num_heads} does not divide the model width {dim}.")


def convert_state(
    state: dict, mapping: dict, what: str, sources: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """Rename every key by `mapping` (refusing unmapped ones) and permute the special-token rows of token tables."""
    converted = map_keys(state, mapping, what, sources=sources)
    return {k: permute_special_rows(v) if k in _PERMUTED else v for k, v in converted.items()}


def prepare_encoder(state: dict, num_heads: int = 16) -> tuple[SonarTextEncoderConfig, dict[str, torch.Tensor]]:
    """Config and converted tensors of a fairseq2 encoder state dict, every key and shape checked.

    Allocates no weights (the architecture is checked on the meta device), so it also runs on a full-size state
    dict of meta tensors.
    """
    config = infer_encoder_config(state, num_heads)
    sources = {}
    converted = convert_state(state, ENCODER_KEY_MAPPING, "Encoder", sources)
    _check_against(SonarTextEncoder, config, converted, state, "encoder", sources)
    return config, converted


def prepare_decoder(state: dict, num_heads: int = 16) -> tuple[SonarTextDecoderConfig, dict[str, torch.Tensor]]:
    """As `prepare_encoder`, and the LM head must equal the decoder embedding (SONAR ties them)."""
    config = infer_decoder_config(state, num_heads)
    sources = {}
    converted = convert_state(state, DECODER_KEY_MAPPING, "Decoder", sources)
    _check_against(SonarTextDecoder, config, converted, state, "decoder", sources)
    head, embed = converted["lm_head.weight"], converted["decoder.embed_tokens.weight"]
    if head.device.type != "meta" and not torch.equal(head, embed):
        raise ConversionError(
            "Decoder `final_proj.weight` differs from `decoder_frontend.embed.weight`; SONAR ties them, so this "
            "checkpoint is not a SONAR text decoder (or was modified)."
        )
    return config, converted


def build_encoder(state: dict, num_heads: int = 16, dtype: torch.dtype | None = None) -> SonarTextEncoder:
    """A `SonarTextEncoder` holding a fairseq2 encoder state dict (strictly checked). dtype: the checkpoint's."""
    config, converted = prepare_encoder(state, num_heads)
    return _materialize(SonarTextEncoder, config, converted, dtype or converted["encoder.embed_tokens.weight"].dtype)


def build_decoder(state: dict, num_heads: int = 16, dtype: torch.dtype | None = None) -> SonarTextDecoder:
    """A `SonarTextDecoder` holding a fairseq2 decoder state dict (strictly checked, head tied to the embedding)."""
    config, converted = prepare_decoder(state, num_heads)
    return _materialize(SonarTextDecoder, config, converted, dtype or converted["decoder.embed_tokens.weight"].dtype)


def _materialize(cls, config, converted, dtype):
    model = cls(config)
    model.load_state_dict(converted, strict=True)
    return model.to(dtype).eval()


def convert_sonar(
    output,
    encoder_path=None,
    decoder_path=None,
    tokenizer_path=None,
    num_heads: int = 16,
    dtype: str | torch.dtype | None = None,
) -> dict[str, Path]:
    """Convert the published checkpoints into `output/encoder` and `output/decoder`, verified by reloading.

    Either checkpoint may be given alone. `dtype` (float32/bfloat16/float16) casts the weights; by default they keep
    the checkpoint's dtype. Both folders are written to a temporary sibling and moved into place only after every
    folder reloaded and reproduced its model, so a failure leaves nothing behind. Returns `{"encoder": path, ...}`.
    """
    from transformers import AutoModel

    from .tokenizer import build_sonar_tokenizer

    if encoder_path is None and decoder_path is None:
        raise ConversionError("Give --encoder, --decoder or both.")
    torch_dtype = parse_dtype(dtype)
    if tokenizer_path is not None and not Path(tokenizer_path).is_file():
        raise ConversionError(f"No tokenizer file at {tokenizer_path}.")
    tokenizer = _build_tokenizer(build_sonar_tokenizer, tokenizer_path) if tokenizer_path else None
    models = {}
    if encoder_path is not None:
        state = unwrap_model_state(load_checkpoint(encoder_path), encoder_path)
        models["encoder"] = build_encoder(state, num_heads, torch_dtype)
    if decoder_path is not None:
        state = unwrap_model_state(load_checkpoint(decoder_path), decoder_path)
        models["decoder"] = build_decoder(state, num_heads, torch_dtype)
    del state
    if tokenizer is not None:
        for model in models.values():
            if len(tokenizer) > model.config.vocab_size:
                raise ConversionError(
                    f"The tokenizer has {len(tokenizer)} tokens but the model only {model.config.vocab_size} rows: "
                    f"{tokenizer_path} does not belong to this checkpoint."
                )
    output = Path(output)
    with atomic_output_dirs(output, list(models), kind="sonar") as staging:
        for name, model in models.items():
            model.tokenizer = tokenizer  # save_pretrained writes it beside the weights (None: a folder without one)
            model.save_pretrained(staging[name])
            if name == "encoder":  # also a sentence-transformers folder (needs no sentence-transformers here)
                write_sentence_transformers_files(staging[name], model.config)
            _verify_reload(model, tokenizer, staging[name], AutoModel)
    return {name: output / name for name in models}


def _build_tokenizer(build, path):
    try:
        return build(path)
    except Exception as error:  # sentencepiece / tokenizers raise RuntimeError, OSError, ... on a bad file
        raise ConversionError(f"Could not read {path} as a SentencePiece model: {error}") from error


def _verify_reload(model, tokenizer, folder: Path, auto_model) -> None:
    """Reload the written folder and check it computes exactly what the converted model does."""
    reloaded = auto_model.from_pretrained(folder, dtype=model.dtype).eval()
    if type(reloaded) is not type(model):
        raise ConversionError(f"{folder} reloads as {type(reloaded).__name__}, not {type(model).__name__}.")
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(4, model.config.vocab_size, (2, 7), generator=generator)
    with torch.no_grad():
        if isinstance(model, SonarTextEncoder):
            mask = torch.ones_like(ids)
            mask[1, 4:] = 0  # one padded row exercises the masked pooling
            same = torch.equal(
                model(ids, attention_mask=mask).pooler_output, reloaded(ids, attention_mask=mask).pooler_output
            )
        else:
            memory = torch.randn(2, model.config.d_model, generator=generator).to(model.dtype)
            same = torch.equal(
                model(sentence_embeddings=memory, decoder_input_ids=ids).logits,
                reloaded(sentence_embeddings=memory, decoder_input_ids=ids).logits,
            )
    if not same:
        raise ConversionError(f"Reloading {folder} did not reproduce the converted model's outputs.")
    if tokenizer is not None:
        from transformers import AutoTokenizer

        probe = ["Hello, my name is Paul.", "Le chat est sur le tapis."]
        again = AutoTokenizer.from_pretrained(folder)
        if again(probe)["input_ids"] != tokenizer(probe)["input_ids"] or len(again) != len(tokenizer):
            raise ConversionError(f"The tokenizer saved in {folder} does not reload with the same ids.")
