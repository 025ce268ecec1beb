"""Embedding a corpus with SONAR at scale: `sonar-llm embed` (runner.py) and its parts, one job per module."""

from .buckets import encode_bucketed, token_buckets
from .resplit import SEPARATORS, resplit
from .runner import EmbedStats, add_embed_arguments, embed_corpus, load_sonar_encoder, run_embed
from .shards import EMBEDDINGS, SENTENCES

__all__ = [
    "EMBEDDINGS",
    "SENTENCES",
    "SEPARATORS",
    "EmbedStats",
    "add_embed_arguments",
    "embed_corpus",
    "encode_bucketed",
    "load_sonar_encoder",
    "resplit",
    "run_embed",
    "token_buckets",
]
