"""The fairseq2 side of `bench_embed.py`: Meta's `TextToEmbeddingModelPipeline` with `batch_max_tokens`, timed.

Runs in the reference environment (fairseq2 0.8.1 + sonar-space 0.5.0), imports nothing of this package:

    REFENV/bin/python benchmarks/fairseq2_embed_worker.py SPEC.json

It builds a SONAR text encoder with sonar's own factory (seeded random weights, the spec's sizes), saves it in the
published layout (`{"model": fairseq2 state dict}`) for our converter, embeds the spec's sentences with
`predict(texts, source_lang, batch_size=None, batch_max_tokens=N)` (length-sorted dynamic buckets, order restored)
after a short warm-up, and writes `fairseq2_embed.json` (seconds, RSS) and `fairseq2_embeddings.pt`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from fairseq2.data.tokenizers import VocabularyInfo
from fairseq2.models.nllb.tokenizer import NllbTokenizerConfig, load_nllb_tokenizer
from sonar.inference_pipelines.text import TextToEmbeddingModelPipeline
from sonar.models.sonar_text.config import SonarTextEncoderConfig
from sonar.models.sonar_text.factory import SonarTextEncoderFactory
from timing import timed  # benchmarks/timing.py, beside this script

LANG = "eng_Latn"


def status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def build_encoder(spec: dict):
    size = spec["sonar"]
    vocab_info = VocabularyInfo(size=size["vocab"], unk_idx=1, bos_idx=2, eos_idx=3, pad_idx=1)
    config = SonarTextEncoderConfig(
        model_dim=size["d_model"], vocab_info=vocab_info, learned_pos=False, no_scale_embedding=False,
        emb_dropout_p=0.1, attention_dropout_p=0.1, activation_dropout_p=0.1, no_token_positional_embeddings=False,
        activation_fn="ReLU", num_encoder_layers=size["layers"], num_decoder_layers=size["layers"],
        num_encoder_attn_heads=size["heads"], num_decoder_attn_heads=size["heads"], ffn_inner_dim=size["ffn"],
        max_seq_len=512, pooling="mean", normalize_before=False, _from_fairseq=True,
    )  # fmt: skip
    torch.manual_seed(spec["seed"])
    return SonarTextEncoderFactory(config).create_model().eval()


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.set_grad_enabled(False)
    work = Path(spec["work"])
    tokenizer = load_nllb_tokenizer(Path(spec["spm"]), NllbTokenizerConfig(langs=spec["languages"], default_lang=LANG))
    encoder = build_encoder(spec)
    torch.save({"model": encoder.state_dict()}, work / "sonar_text_encoder.pt")
    pipeline = TextToEmbeddingModelPipeline(encoder, tokenizer)
    texts, max_tokens = spec["texts"], spec["max_tokens"]
    pipeline.predict(texts[: spec["warmup"]], source_lang=LANG, batch_size=None, batch_max_tokens=max_tokens)
    rss_ready = status("VmRSS")
    embeddings, seconds = timed(lambda: pipeline.predict(texts, source_lang=LANG, batch_size=None,
                                                         batch_max_tokens=max_tokens))  # fmt: skip
    torch.save(embeddings.contiguous(), work / "fairseq2_embeddings.pt")
    result = {"seconds": seconds, "rss_ready": rss_ready, "peak_rss": status("VmHWM"), "torch": torch.__version__,
              "threads": torch.get_num_threads()}  # fmt: skip
    (work / "fairseq2_embed.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
