"""Loading and saving SONAR models as one unit: strict weights, and the tokenizer that travels with them.

A SONAR model without its tokenizer silently produces empty sentences, and a randomly initialised weight silently
produces garbage, so both are handled here for every model class:
- `save_pretrained` (and so `push_to_hub`, which calls it) writes the tokenizer beside the weights;
- `from_pretrained` refuses missing and unexpected weights by name, and loads the tokenizer from the same place with
  the same `revision`, `subfolder`, `token`, `cache_dir` and `local_files_only`;
- a folder without a tokenizer still loads, but anything that needs one raises an error saying what to pass. A
  tokenizer without SentencePiece pieces (what transformers builds from a folder holding no tokenizer files) is
  never used;
- `execution_device` says where a module loaded with `device_map` computes (its parameters may be offloaded to "meta").
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.utils import logging

from .tokenization_sonar import SONAR_LANGUAGES

logger = logging.get_logger(__name__)

# `from_pretrained` options that say where the files are; the tokenizer is read with the same ones.
_LOCATION_KWARGS = ("revision", "subfolder", "token", "cache_dir", "local_files_only", "force_download", "proxies")
_NON_PIECES = 4 + len(SONAR_LANGUAGES) + 1  # <s> <pad> </s> <unk>, the language codes, <mask>


def has_pieces(tokenizer) -> bool:
    """Whether `tokenizer` holds SentencePiece pieces, not only special tokens and language codes."""
    return tokenizer is not None and len(tokenizer) > _NON_PIECES


def load_sonar_tokenizer(source: str, **location):
    """The SONAR tokenizer saved in a folder or Hub repo, or None (with a warning) when it holds none."""
    # Naming the class avoids AutoTokenizer reading config.json, which would ask for trust_remote_code again.
    from transformers import NllbTokenizer

    try:
        tokenizer = NllbTokenizer.from_pretrained(source, **location)
    except (OSError, ValueError) as error:
        logger.warning(f"No SONAR tokenizer could be loaded from {source!r} ({error}).")
        return None
    if not has_pieces(tokenizer):
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
        """`PreTrainedModel.from_pretrained`, but missing or unexpected weights are an error (never a random
        initialisation), and the tokenizer is loaded from the same place."""
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        problems = []
        for kind in ("missing_keys", "unexpected_keys"):
            keys = sorted(info.get(kind, []))
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
        model.tokenizer = load_sonar_tokenizer(str(pretrained_model_name_or_path), **location)
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
