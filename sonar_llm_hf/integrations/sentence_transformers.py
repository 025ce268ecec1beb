"""SONAR encoder folders that load as `SentenceTransformer(folder_or_repo, trust_remote_code=True)` (6.x).

A folder is the encoder's own (weights, config, model code, tokenizer) plus sentence-transformers' files:
`modules.json` (our `SonarEncoderModule` with `"kwargs": ["lang"]`, then mean `Pooling`), `sentence_bert_config.json`,
`1_Pooling/config.json`, `config_sentence_transformers.json` (cosine similarity) and the module's code,
`sentence_transformers_sonar.py`. `modules.json` names the module by that file (`sentence_transformers_sonar.
SonarEncoderModule`), as Hub remote code is named, so the folder loads where this package is not installed.

- `sonar_sentence_transformer(encoder)`: the `SentenceTransformer` in memory (no files);
- `save_sentence_transformer(encoder, folder)`: writes the folder with sentence-transformers' own `save`;
- `write_sentence_transformers_files(folder, config)`: adds the same files beside an already saved encoder without
  writing the weights again and without sentence-transformers installed (the converter uses it; a test checks it
  writes what `save` writes).

`model.encode(texts, lang="fra_Latn")` embeds in one language (default `eng_Latn`) and equals
`SonarTextEncoder.encode(texts, lang="fra_Latn")`. For mixed-language input, group the texts by language, call once
per group and put the rows back in order (`encode_by_language` does this).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

MODULE_FILE = "sentence_transformers_sonar.py"
MODULE_TYPE = "sentence_transformers_sonar.SonarEncoderModule"  # the file in the folder, as remote code is named
POOLING_TYPE = "sentence_transformers.sentence_transformer.modules.pooling.Pooling"
POOLING_DIR = "1_Pooling"
_MODULE_SOURCE = Path(__file__).resolve().parents[1] / "models" / MODULE_FILE


def sonar_sentence_transformer(encoder, max_seq_length: int | None = None, device: str | None = None):
    """`SentenceTransformer` over a loaded `SonarTextEncoder` (with its tokenizer): SONAR states, then mean pooling.

    `max_seq_length` defaults to the encoder's positions, as `SonarTextEncoder.encode` does.
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from ..models.sentence_transformers_sonar import SonarEncoderModule

    module = SonarEncoderModule(encoder, max_seq_length=max_seq_length)
    pooling = Pooling(encoder.config.d_model, pooling_mode="mean")
    device = device or str(encoder.device)
    model = SentenceTransformer(modules=[module, pooling], similarity_fn_name="cosine", device=device)
    model.module_kwargs = {"0": ["lang"]}  # written to modules.json: `lang` is a documented forward kwarg
    return model


def save_sentence_transformer(encoder_or_model, folder) -> Path:
    """Write a folder that loads with `SentenceTransformer(folder, trust_remote_code=True)`, by sentence-transformers'
    own `save` (no model card: the converted folder's card states the CC-BY-NC-4.0 licence)."""
    from sentence_transformers import SentenceTransformer

    model = encoder_or_model
    if not isinstance(model, SentenceTransformer):
        model = sonar_sentence_transformer(encoder_or_model)
    folder = Path(folder)
    model.save(str(folder), create_model_card=False)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["type"] = MODULE_TYPE  # save() names the installed package's module; the folder carries its code
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    shutil.copyfile(_MODULE_SOURCE, folder / MODULE_FILE)
    return folder


def write_sentence_transformers_files(folder, config, max_seq_length: int | None = None) -> list[Path]:
    """Add sentence-transformers' files to a folder already holding a saved `SonarTextEncoder` (`config` is its
    config). Needs no sentence-transformers; returns the paths written."""
    folder = Path(folder)
    if getattr(config, "model_type", None) != "sonar_text_encoder":
        raise ValueError(f"Sentence-transformers files are for SONAR text encoders, not {type(config).__name__}.")
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} holds no saved encoder (config.json); save the encoder there first.")
    positions = config.max_position_embeddings
    if max_seq_length is not None and not 3 <= max_seq_length <= positions:
        raise ValueError(f"`max_seq_length` must be between 3 and the encoder's {positions} positions.")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": MODULE_TYPE, "kwargs": ["lang"]},
        {"idx": 1, "name": "1", "path": POOLING_DIR, "type": POOLING_TYPE},
    ]
    files = {
        "modules.json": (modules, 2),
        "sentence_bert_config.json": ({"max_seq_length": max_seq_length or positions}, 4),
        f"{POOLING_DIR}/config.json": (
            {"embedding_dimension": config.d_model, "pooling_mode": "mean", "include_prompt": True}, 4
        ),
        "config_sentence_transformers.json": (
            {"__version__": _versions(), "default_prompt_name": None, "model_type": "SentenceTransformer",
             "prompts": {"document": "", "query": ""}, "similarity_fn_name": "cosine"}, 2,
        ),
    }  # fmt: skip
    written = []
    for name, (content, indent) in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=indent, sort_keys=name.startswith("config_")))
        written.append(path)
    shutil.copyfile(_MODULE_SOURCE, folder / MODULE_FILE)
    return [*written, folder / MODULE_FILE]


def _versions() -> dict[str, str]:
    """The libraries' versions, as sentence-transformers records them (its own only when installed)."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    import transformers

    versions = {"pytorch": torch.__version__, "transformers": transformers.__version__}
    try:
        versions["sentence_transformers"] = version("sentence-transformers")
    except PackageNotFoundError:
        pass
    return dict(sorted(versions.items()))


def encode_by_language(model, texts: Sequence[str], langs: Sequence[str], **encode_kwargs):
    """Embed texts of several languages with one `SentenceTransformer` call per language, rows in input order.

    `langs[i]` is the SONAR code of `texts[i]`. Returns what `model.encode` returns for the whole list (a numpy array
    by default, a tensor with `convert_to_tensor=True`).
    """
    import numpy as np
    import torch

    texts, langs = list(texts), list(langs)
    if len(texts) != len(langs):
        raise ValueError(f"Got {len(texts)} texts but {len(langs)} languages; give one SONAR code per text.")
    if not texts:
        raise ValueError("No texts to embed.")
    groups: dict[str, list[int]] = {}
    for index, lang in enumerate(langs):
        groups.setdefault(lang, []).append(index)
    parts = {lang: model.encode([texts[i] for i in rows], lang=lang, **encode_kwargs) for lang, rows in groups.items()}
    first = next(iter(parts.values()))
    is_tensor = isinstance(first, torch.Tensor)
    result = (
        first.new_empty((len(texts), *first.shape[1:]))
        if is_tensor
        else np.empty((len(texts), *first.shape[1:]), dtype=first.dtype)
    )
    for lang, rows in groups.items():
        result[torch.tensor(rows) if is_tensor else np.asarray(rows)] = parts[lang]
    return result


__all__ = [
    "encode_by_language",
    "save_sentence_transformer",
    "sonar_sentence_transformer",
    "write_sentence_transformers_files",
]
