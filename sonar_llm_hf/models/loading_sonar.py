"""Loading and saving SONAR models as one unit: strict weights, and the tokenizer that travels with them.

A SONAR model without its tokenizer silently produces empty sentences, and a randomly initialised weight silently
produces garbage, so both are handled here for every model class:
- `save_pretrained` (and so `push_to_hub`, which calls it) writes the tokenizer beside the weights;
- `from_pretrained` refuses missing and unexpected weights by name, and loads the tokenizer from the same place with
  the same `revision`, `subfolder`, `token`, `cache_dir` and `local_files_only`;
- a folder without a tokenizer still loads, but anything that needs one raises an error saying what to pass. A
  tokenizer without SentencePiece pieces (what transformers builds from a folder holding no tokenizer files) is
  never used. Tokenizer files that are there but cannot be read (truncated, corrupt, no pieces) are an error at
  loading: the model would otherwise load as if it had none;
- `execution_device` says where a module loaded with `device_map` computes (its parameters may be offloaded to "meta").
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers.utils import logging

from .tokenization_sonar import SONAR_LANGUAGES

logger = logging.get_logger(__name__)

# The files a saved SONAR tokenizer leaves in a folder (`NllbTokenizer.save_pretrained`).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "sentencepiece.bpe.model")
# `from_pretrained` options that say where the files are; the tokenizer is read with the same ones.
_LOCATION_KWARGS = ("revision", "subfolder", "token", "cache_dir", "local_files_only", "force_download", "proxies")
_NON_PIECES = 4 + len(SONAR_LANGUAGES) + 1  # <s> <pad> </s> <unk>, the language codes, <mask>


def has_pieces(tokenizer) -> bool:
    """Whether `tokenizer` holds SentencePiece pieces, not only special tokens and language codes."""
    return tokenizer is not None and len(tokenizer) > _NON_PIECES


def load_sonar_tokenizer(source: str, **location):
    """The SONAR tokenizer saved in a folder or Hub repo, or None (with a warning) when it holds none. Tokenizer
    files in a local folder that cannot be read, or that hold no SentencePiece pieces, raise a `ValueError`."""
    # Naming the class avoids AutoTokenizer reading config.json, which would ask for trust_remote_code again.
    from transformers import NllbTokenizer

    folder = os.path.join(source, location.get("subfolder") or "")
    present = [name for name in TOKENIZER_FILES if os.path.isfile(os.path.join(folder, name))]
    damaged = (
        f"The SONAR tokenizer saved in {source!r} ({', '.join(present)}) cannot be used: {{}}. Copy the tokenizer "
        "files again from the converted model, or delete them and pass `tokenizer=` to `from_pretrained`."
    )
    try:
        tokenizer = NllbTokenizer.from_pretrained(source, **location)
    except Exception as error:  # JSON, tokenizers and sentencepiece errors alike: the files are there but broken
        if not present and isinstance(error, OSError):  # a Hub repo without tokenizer files
            logger.warning(f"No SONAR tokenizer could be loaded from {source!r} ({error}).")
            return None
        raise ValueError(damaged.format(f"{type(error).__name__}: {error}")) from error
    if not has_pieces(tokenizer):
        if present:
            raise ValueError(damaged.format(f"they hold {len(tokenizer)} tokens and no SentencePiece pieces"))
        logger.warning(
            f"{source!r} holds no SONAR tokenizer (no tokenizer.json with SentencePiece pieces); text methods will "
            "ask for one. Set `model.tokenizer = ...` or save the model together with its tokenizer."
        )
        return None
    return tokenizer


def execution_device(module: nn.Module) -> torch.device:
    """Where `module`'s first layer computes, hence where its inputs belong. `module.device` is its first parameter's
    device, which is "meta" when `device_map` offloads the module to CPU or disk: accelerate's hook then names the
    device it runs on (`execution_device`)."""
    for sub in module.modules():
        hooks = getattr(sub, "_hf_hook", None)
        for hook in getattr(hooks, "hooks", [hooks]):  # a SequentialHook holds several
            device = getattr(hook, "execution_device", None)
            if device is not None:
                return torch.device(device)
        for parameter in sub.parameters(recurse=False):
            if parameter.device.type != "meta":
                return parameter.device
    return torch.device("cpu")


class SonarTokenizerMixin:
    """`tokenizer` attribute, strict `from_pretrained` and tokenizer-saving `save_pretrained` for SONAR models."""

    _tokenizer = None

    @property
    def tokenizer(self):
        """The SONAR tokenizer: loaded with the weights, or set by hand (`model.tokenizer = tokenizer`)."""
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value) -> None:
        if value is not None and not has_pieces(value):
            raise ValueError(
                f"This tokenizer has {len(value)} tokens: only special tokens and language codes, no SentencePiece "
                "pieces. Load the SONAR tokenizer saved with a converted model (`AutoTokenizer.from_pretrained(folder)`)."
            )
        self._tokenizer = value

    def _tokenizer_or_raise(self, tokenizer=None):
        tokenizer = tokenizer if tokenizer is not None else self.tokenizer
        if tokenizer is None:
            source = getattr(self.config, "_name_or_path", "") or "this model"
            raise ValueError(
                f"{type(self).__name__} has no SONAR tokenizer: {source!r} was loaded without one. Pass "
                "`tokenizer=AutoTokenizer.from_pretrained(folder_with_tokenizer)` to this call, or set "
                "`model.tokenizer = ...` once; `save_pretrained` then writes it beside the weights."
            )
        if not has_pieces(tokenizer):
            raise ValueError(f"The tokenizer passed has {len(tokenizer)} tokens and no SentencePiece pieces.")
        return tokenizer

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but missing, unexpected or mis-shaped weights are an error (never a
        random initialisation, also with `ignore_mismatched_sizes=True`), and the tokenizer is loaded from the same
        place (or taken from `tokenizer=`)."""
        wants_info = kwargs.pop("output_loading_info", False)
        tokenizer = kwargs.pop("tokenizer", None)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = []
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
            keys = sorted(str(key) for key in info.get(kind, []))  # mismatched: (name, saved shape, model shape)
            if keys:
                shown = ", ".join(keys[:8]) + (f" … ({len(keys)} in all)" if len(keys) > 8 else "")
                problems.append(f"{kind.replace('_', ' ')}: {shown}")
        if problems:
            raise ValueError(
                f"{pretrained_model_name_or_path!r} does not hold exactly the weights of a {cls.__name__} ("
                + "; ".join(problems)
                + "). Refusing to initialise weights randomly or to drop any; convert the checkpoint with the "
                "scripts in `conversion/`, which verify what they write."
            )
        location = {key: kwargs[key] for key in _LOCATION_KWARGS if kwargs.get(key) is not None}
        if tokenizer is None:
            tokenizer = load_sonar_tokenizer(str(pretrained_model_name_or_path), **location)
        model.tokenizer = tokenizer
        model._after_loading()
        return (model, info) if wants_info else model

    def _after_loading(self) -> None:
        """Hook for subclasses (SONAR-LLM re-freezes SONAR)."""

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the tokenizer beside the weights (so `push_to_hub` uploads it)."""
        transformed = sorted({f"{type(module).__name__} ({name} {getattr(module, name)})" for module in self.modules()
                              for name in ("quantized", "packed") if getattr(module, name, None)})  # fmt: skip
        if transformed:
            raise ValueError(
                f"This model holds SONAR parts transformed for inference only: {', '.join(transformed)}; their weights "
                "are no longer plain fp32 tensors, so a saved folder would be incomplete. Save before `quantize_sonar`"
                " / `pack_sonar`, call `unpack_sonar(model)` after packing, or load the saved folder again."
            )
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.tokenizer is not None and kwargs.get("is_main_process", True):
            self.tokenizer.save_pretrained(save_directory)
        elif self.tokenizer is None:
            logger.warning(
                f"Saved {type(self).__name__} without a tokenizer: set `model.tokenizer` first, or the saved folder "
                "cannot encode or decode text."
            )


__all__ = ["SonarTokenizerMixin", "execution_device", "has_pieces", "load_sonar_tokenizer"]
