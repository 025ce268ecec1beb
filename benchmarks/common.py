"""Shared set-up of the benchmarks: same random weights for both sides, realistic or quick shapes, timers."""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from sonar_llm_hf import (
    SonarLLMConfig,
    SonarLLMForCausalSentenceModeling,
    SonarTextDecoderConfig,
    SonarTextEncoderConfig,
    llama_preset,
)
from sonar_llm_hf.testing.tiny import build_tiny_tokenizer

FULL_SONAR = dict(d_model=1024, layers=24, heads=16, ffn=8192, vocab=256206)
QUICK_SONAR = dict(d_model=64, layers=2, heads=4, ffn=256, vocab=4000)


def build_model(quick: bool, tokenizer_dir, dtype=torch.float32, device="cpu", seed=0):
    """The 100M backbone preset with full-size SONAR (random weights), or reduced sizes for `--quick`."""
    sonar = QUICK_SONAR if quick else FULL_SONAR
    tokenizer = build_tiny_tokenizer(tokenizer_dir)
    text = dict(d_model=sonar["d_model"], encoder_layers=sonar["layers"], decoder_layers=sonar["layers"],
                encoder_attention_heads=sonar["heads"], decoder_attention_heads=sonar["heads"],
                encoder_ffn_dim=sonar["ffn"], decoder_ffn_dim=sonar["ffn"], vocab_size=sonar["vocab"])  # fmt: skip
    backbone = llama_preset("100M", **(dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, head_dim=16) if quick else {}))  # fmt: skip
    config = SonarLLMConfig(llama_config=backbone, encoder_config=SonarTextEncoderConfig(**text),
                            decoder_config=SonarTextDecoderConfig(**text), embed_dim=sonar["d_model"])  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(device):
        model = SonarLLMForCausalSentenceModeling(config)
    model.to(dtype).eval()
    model.tokenizer = tokenizer
    # Random decoders rarely pick </s>; make it impossible before the forced last position so that every sentence
    # has the same, realistic length on both sides.
    with torch.no_grad():
        model.sonar_decoder.decoder.embed_tokens.weight[model.sonar_decoder.config.eos_token_id] = 0
        model.sonar_decoder.decoder.embed_tokens.weight[len(tokenizer) :] = 0
    return model


@contextmanager
def timed(totals: dict, key: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        totals[key] = totals.get(key, 0.0) + time.perf_counter() - start


def instrument(model, totals: dict):
    """Time every SONAR decode and encode call of `model` (wrapping the bound methods)."""
    decode, encode = model.sonar_decoder.decode, model.sonar_encoder.encode_token_ids

    def timed_decode(*args, **kwargs):
        with timed(totals, "decode"):
            return decode(*args, **kwargs)

    def timed_encode(*args, **kwargs):
        with timed(totals, "encode"):
            return encode(*args, **kwargs)

    model.sonar_decoder.decode, model.sonar_encoder.encode_token_ids = timed_decode, timed_encode


def matmul_gflops(device="cpu", dtype=torch.float32, size=2048, repeats=5) -> float:
    """This machine's large-matmul rate, the unit of the FLOP floor."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def decoder_flops_per_token(config) -> float:
    """One decoder step for one hypothesis: self-attention, cross-attention (memory keys cached), FFN, vocabulary."""
    d, f, v = config.d_model, config.decoder_ffn_dim, config.vocab_size
    return config.decoder_layers * 2 * (4 * d * d + 2 * d * d + 2 * d * f) + 2 * d * v


def encoder_flops_per_token(config) -> float:
    d, f = config.d_model, config.encoder_ffn_dim
    return config.encoder_layers * 2 * (4 * d * d + 2 * d * f)


def backbone_flops_per_position(config) -> float:
    llama = config.llama_config
    h, f = llama.hidden_size, llama.intermediate_size
    attention = 2 * h * llama.num_attention_heads * llama.head_dim * 4
    return llama.num_hidden_layers * (attention + 2 * 3 * h * f) + 2 * 2 * h * config.embed_dim
