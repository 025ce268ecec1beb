"""Tiny real components for tests, demos and benchmarks: a SentencePiece model trained in seconds on a few sentences.

Trained like NLLB's (BPE, unk=0, bos=1, eos=2, no pad), so `build_sonar_tokenizer` lays it out exactly as SONAR.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

TINY_CORPUS = [
    "The cat sat on the mat.", "It was happy.", "A dog ran in the park.", "The sun was warm.",
    "The dog found a ball.", "He played all day.", "Tom had a red car.", "Lily liked to read books.",
    "Hello, my name is Paul.", "I'm working as a teacher.", "My name is SONAR.",
    "I can embed the sentences into vectorial space.", "End of sequence.", "Begin of text.",
    "Once upon a time, there was a little girl.", "She loved to play outside with her friends.",
    "Numbers like 42 and 3.14 are fine.", "What a lovely day!", "Where is the big tree?",
    "Le chat est sur le tapis.", "Bonjour, mon nom est Paul.", "Je travaille comme professeur.",
    "Il fait beau aujourd'hui.", "La petite fille aime les fleurs.", "Der Hund spielt im Garten.",
    "Café, naïve, façade, élève, garçon.", "They went home and ate soup.", "The bird sang a song.",
]  # fmt: skip


def train_tiny_spm(path, sentences=None, vocab_size: int = 200) -> Path:
    """Train a SentencePiece BPE model into `path` (a `.model` file) and return its path."""
    import sentencepiece as spm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences or TINY_CORPUS) * 4),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


def build_tiny_tokenizer(directory, sentences=None, vocab_size: int = 200):
    """A SONAR-layout tokenizer over a freshly trained tiny SentencePiece model."""
    from ..conversion.tokenizer import build_sonar_tokenizer

    return build_sonar_tokenizer(train_tiny_spm(Path(directory) / "spm.model", sentences, vocab_size))


def make_fs2_sonar_state_dict(
    kind: str,
    vocab: int = 50,
    dim: int = 8,
    layers: int = 2,
    ffn: int = 16,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """A state dict with the exact keys and shapes of a fairseq2 SONAR text `kind` ("encoder"/"decoder") checkpoint.

    Random normal values, or empty meta tensors with `device="meta"` (the real 24-layer, 256,206-token, d 1024,
    FFN 8192 key/shape set then costs no memory). As in the published decoder, `final_proj.weight` *is* the
    decoder embedding. Rows are in fairseq2 order. For converter tests and dry runs.
    """
    if kind not in ("encoder", "decoder"):
        raise ValueError(f"kind must be 'encoder' or 'decoder', got {kind!r}.")
    if torch.device(device or "cpu").type == "meta":

        def make(*shape):
            return torch.empty(*shape, device="meta", dtype=dtype)
    else:

        def make(*shape):
            return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    state = {f"{kind}_frontend.embed.weight": make(vocab, dim)}
    attentions = ["self_attn"] + (["encoder_decoder_attn"] if kind == "decoder" else [])
    for i in range(layers):
        prefix = f"{kind}.layers.{i}."
        for attn in attentions:
            for proj in ("q_proj", "k_proj", "v_proj", "output_proj"):
                state[f"{prefix}{attn}.{proj}.weight"] = make(dim, dim)
                state[f"{prefix}{attn}.{proj}.bias"] = make(dim)
            state[f"{prefix}{attn}_layer_norm.weight"], state[f"{prefix}{attn}_layer_norm.bias"] = make(dim), make(dim)
        state[f"{prefix}ffn.inner_proj.weight"], state[f"{prefix}ffn.inner_proj.bias"] = make(ffn, dim), make(ffn)
        state[f"{prefix}ffn.output_proj.weight"], state[f"{prefix}ffn.output_proj.bias"] = make(dim, ffn), make(dim)
        state[f"{prefix}ffn_layer_norm.weight"], state[f"{prefix}ffn_layer_norm.bias"] = make(dim), make(dim)
    if kind == "encoder":
        state["layer_norm.weight"], state["layer_norm.bias"] = make(dim), make(dim)  # model-level final norm
    else:
        state["decoder.layer_norm.weight"], state["decoder.layer_norm.bias"] = make(dim), make(dim)
        state["final_proj.weight"] = state["decoder_frontend.embed.weight"]  # tied
    return state
