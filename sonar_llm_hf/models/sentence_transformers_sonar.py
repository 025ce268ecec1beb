"""The SONAR text encoder as a sentence-transformers (6.x) input module.

A converted encoder folder lists this module in `modules.json`, followed by sentence-transformers' own mean
`Pooling`, so `SentenceTransformer(folder, trust_remote_code=True).encode(texts, lang="fra_Latn")` gives
`SonarTextEncoder.encode(texts, lang="fra_Latn")`. SONAR's language is a token, not a prompt: `lang` is a declared
forward kwarg (`forward_kwargs`), which sentence-transformers hands to `preprocess` (where it picks the language token)
and to `forward`. One call embeds one language (default `eng_Latn`); group mixed-language input by language and call
once per group.

The module does not use sentence-transformers' `Transformer`: that class loads any M2M100-family config (which
SONAR's is) as a bare `M2M100Encoder`, whose weight names differ from ours, and tokenizes with transformers' NLLB
behaviour instead of SentencePiece's (see `tokenization_sonar.py`). Here the weights load strictly with
`SonarTextEncoder.from_pretrained` and the ids come from `encode_source`, so both paths compute the same numbers.
This file imports sentence-transformers, so only sentence-transformers loads it; the model classes never do.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from sentence_transformers.base.modules import InputModule

from .configuration_sonar_text import check_encoder_length
from .modeling_sonar_text import SonarTextEncoder
from .tokenization_sonar import encode_source, validate_texts

# `from_pretrained` options that say where the files are (sentence-transformers' names -> transformers').
_LOCATION = {"subfolder": "subfolder", "token": "token", "cache_folder": "cache_dir", "revision": "revision",
             "local_files_only": "local_files_only"}  # fmt: skip


class SonarEncoderModule(InputModule):
    """Token states of a `SonarTextEncoder` for sentence-transformers; the next module (mean `Pooling`) pools them.

    `preprocess(texts, lang="eng_Latn")` gives SentencePiece-exact `[lang] pieces </s>` ids, truncated to
    `max_seq_length` tokens with `</s>` kept (one warning per batch counting what was cut); `forward` runs the
    encoder as `SonarTextEncoder.encode` does (with the speed paths of `sonar_llm_hf.speed.prepare_for_inference`
    where the caller applied them to `auto_model`).

    Example:

    ```python
    >>> from sentence_transformers import SentenceTransformer
    >>> model = SentenceTransformer("sonar/encoder", trust_remote_code=True)  # modules.json names this module
    >>> model.encode(["Le chat est sur le tapis."], lang="fra_Latn").shape
    (1, 1024)
    ```
    """

    config_file_name = "sentence_bert_config.json"
    config_keys: ClassVar[list[str]] = ["max_seq_length"]
    forward_kwargs: ClassVar[set[str]] = {"lang"}
    save_in_root = True

    def __init__(self, model: SonarTextEncoder, max_seq_length: int | None = None):
        super().__init__()
        if not isinstance(model, SonarTextEncoder):
            raise TypeError(f"`model` must be a SonarTextEncoder, got {type(model).__name__}.")
        self.auto_model = model
        self.max_seq_length = check_encoder_length(max_seq_length, model.config.max_position_embeddings)

    @property
    def tokenizer(self):
        return self.auto_model._tokenizer_or_raise()

    def preprocess(self, inputs, prompt: str | None = None, lang: str = "eng_Latn", **kwargs) -> dict:
        if any(not isinstance(text, str) for text in inputs):
            bad = next(type(text).__name__ for text in inputs if not isinstance(text, str))
            raise TypeError(f"SONAR embeds single texts; got a {bad} (text pairs and other modalities do not apply).")
        texts = validate_texts(list(inputs))
        if prompt:
            texts = [prompt + text for text in texts]
        rows = encode_source(self.tokenizer, texts, lang, max_length=self.max_seq_length)
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.auto_model.config.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = torch.tensor(row)
            attention_mask[index, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def forward(self, features: dict, lang: str | None = None, **kwargs) -> dict:
        """Adds `token_embeddings` (N, T, d); `lang` was already applied by `preprocess`."""
        model, ids, mask = self.auto_model, features["input_ids"], features["attention_mask"]
        features["token_embeddings"] = model(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
        return features

    def get_embedding_dimension(self) -> int:
        return self.auto_model.config.d_model

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        self.auto_model.save_pretrained(output_path)  # weights, config, model code and tokenizer
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, model_kwargs: dict | None = None, **kwargs) -> SonarEncoderModule:
        """Strict loading (`SonarTextEncoder.from_pretrained`) from the folder or Hub repo, at the given revision."""
        location = {key: kwargs[key] for key in _LOCATION if kwargs.get(key) not in (None, "")}
        config = cls.load_config(model_name_or_path, **location)
        options = {key: value for key, value in (model_kwargs or {}).items() if key != "trust_remote_code"}
        options.update({_LOCATION[key]: value for key, value in location.items()})
        model = SonarTextEncoder.from_pretrained(model_name_or_path, **options).eval()
        return cls(model, **config)


__all__ = ["SonarEncoderModule"]
