"""Tiny real components for tests, demos and benchmarks: a SentencePiece model trained in seconds on a few sentences.

Trained like NLLB's (BPE, unk=0, bos=1, eos=2, no pad), so `build_sonar_tokenizer` lays it out exactly as SONAR.
"""

from __future__ import annotations

import io
from pathlib import Path

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
    from .tokenization_sonar import build_sonar_tokenizer

    return build_sonar_tokenizer(train_tiny_spm(Path(directory) / "spm.model", sentences, vocab_size))
