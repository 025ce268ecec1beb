"""Shared pieces of the checkpoint converters: safe loading, strict regex key mapping, checks against the model.

Not remote code: only the conversion scripts and tests import it. Every failure is a `ConversionError` (a
`ValueError`) whose message names what is wrong, so a CLI can print it and exit without a traceback.

A converter is typically:

```python
state = load_checkpoint(path)                       # weights_only=True; code-carrying pickles are refused
state = check_state_dict(state["model"], str(path))  # str -> Tensor, nothing else
sources = {}
converted = map_keys(state, ORIGINAL_TO_CONVERTED_KEY_MAPPING, "Encoder", sources=sources)
with torch.device("meta"):
    skeleton = Model(config)                        # no memory
check_against_model(converted, skeleton, "Encoder", sources=sources)
model = Model(config); model.load_state_dict(converted, strict=True)
with atomic_output_dirs(out, ["encoder"]) as staging:  # sonar_llm_hf.conversion.output
    model.save_pretrained(staging["encoder"])       # moved to out/encoder only if the block succeeds
```
"""

from __future__ import annotations

import contextlib
import json
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

# fairseq2 orders the first four ids (<pad>, <unk>, <s>, </s>); HF NLLB orders them (<s>, <pad>, </s>, <unk>).
# hf[[0, 1, 2, 3]] = fs2[[2, 0, 3, 1]]; every other row keeps its index.
FS2_TO_HF_SPECIAL_ROWS = [2, 0, 3, 1]
# The inverse: fs2[[0, 1, 2, 3]] = hf[[1, 3, 0, 2]].
HF_TO_FS2_SPECIAL_ROWS = [1, 3, 0, 2]

_SHOWN = 10  # how many offending keys an error message lists


class ConversionError(ValueError):
    """A checkpoint that cannot be converted faithfully; the message names what is wrong."""


def _listing(keys: Sequence[str]) -> str:
    keys = list(keys)
    return ", ".join(keys[:_SHOWN]) + (f", … ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else "")


def load_checkpoint(path, allowed_globals: list | None = None):
    """`torch.load(weights_only=True)`: tensors and plain containers only, never arbitrary code.

    `allowed_globals` extends the allow-list (e.g. numpy's RNG-state reconstructors) for known, harmless types.
    A pickle that would import or call anything else is refused *before* anything in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"No checkpoint file at {path}.")
    with open(path, "rb") as handle:
        magic = handle.read(2)
    # torch.save writes a zip archive ("PK"); the legacy format and plain pickles (protocol >= 2) start with 0x80.
    if not (magic == b"PK" or magic[:1] == b"\x80"):
        raise ConversionError(
            f"Could not read {path} as a PyTorch checkpoint: it is neither a zip archive nor a pickle."
        )
    context = torch.serialization.safe_globals(allowed_globals) if allowed_globals else contextlib.nullcontext()
    try:
        with context:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"Refusing to load {path}: it is not a plain tensor checkpoint (weights_only=True rejected it, so it was "
            f"not executed). Details: {_weights_only_detail(error)}"
        ) from error
    except Exception as error:  # torch.load raises KeyError, RuntimeError, EOFError, ... on files it cannot read
        raise ConversionError(
            f"Could not read {path} as a PyTorch checkpoint ({type(error).__name__}: {error})."
        ) from error


def _weights_only_detail(error: Exception) -> str:
    """The informative line(s) of torch's long weights_only message (e.g. "unsupported GLOBAL posix.system")."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [line.strip() for line in str(error).splitlines()]
    detail = [line for line in lines if line and not line.startswith(boilerplate)]
    return " ".join(detail) or lines[0]


def check_state_dict(state, what: str) -> dict[str, torch.Tensor]:
    """`state` as a `dict[str, Tensor]`, or a `ConversionError` naming the entries that are not tensors."""
    if not isinstance(state, Mapping):
        raise ConversionError(f"{what}: expected a state dict (str -> tensor), found {type(state).__name__}.")
    if not state:
        raise ConversionError(f"{what}: the state dict is empty.")
    bad = [f"{k!r} ({type(v).__name__})" for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ConversionError(f"{what}: {len(bad)} entr(y/ies) are not named tensors: {_listing(bad)}")
    check_weights(state, what)
    return dict(state)


def check_weights(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Every weight a floating-point tensor of finite values, checked before anything is written: an integer or bool
    table would be cast silently, and a NaN or inf would be written and only show up as garbage output later."""
    not_float = [f"{k} ({v.dtype})" for k, v in state.items() if not v.is_floating_point()]
    if not_float:
        raise ConversionError(
            f"{what}: {len(not_float)} weight(s) are not floating-point tensors: {_listing(not_float)}. "
            "A SONAR/SONAR-LLM checkpoint holds float weights only: this file is damaged or not such a checkpoint."
        )
    not_finite = []
    for key, tensor in state.items():
        finite = torch.isfinite(tensor)
        if not bool(finite.all()):
            nan = int(torch.isnan(tensor).sum())
            not_finite.append(f"{key} ({nan} NaN, {int((~finite).sum()) - nan} inf of {tensor.numel()})")
    if not_finite:
        raise ConversionError(
            f"{what}: {len(not_finite)} weight(s) hold NaN or inf values: {_listing(not_finite)}. Converting them "
            "would write a model that computes garbage; use a checkpoint saved before training diverged."
        )


def permute_special_rows(weight: torch.Tensor, order: Sequence[int] = FS2_TO_HF_SPECIAL_ROWS) -> torch.Tensor:
    """Reorder the four special-token rows of an embedding or LM head (default: fairseq2 -> HF NLLB order).

    Returns a new tensor (`new[i] = weight[order[i]]` for i < 4, other rows unchanged). Works on meta tensors.
    """
    if weight.dim() != 2 or weight.shape[0] < len(order):
        raise ConversionError(f"Cannot permute special-token rows of a tensor of shape {tuple(weight.shape)}.")
    weight = weight.clone()
    weight[: len(order)] = weight[list(order)]
    return weight


def map_keys(
    state_dict: Mapping[str, torch.Tensor],
    mapping: Mapping[str, str | None],
    what: str,
    sources: dict[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Rename every key with the first fully matching regex of `mapping` (a `None` replacement drops the key).

    Refuses keys no rule matches and two keys renamed to the same name. If `sources` is given it is filled with
    `new_name -> original_name`, so later checks can name the key the user's file actually holds.
    """
    converted, unmapped, origin = {}, [], {}
    collisions = []
    for key, tensor in state_dict.items():
        for pattern, replacement in mapping.items():
            if re.fullmatch(pattern, key):
                if replacement is not None:
                    new = re.sub(f"^(?:{pattern})$", replacement, key)
                    if new in converted:
                        collisions.append(f"{origin[new]} and {key} -> {new}")
                    converted[new], origin[new] = tensor, key
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ConversionError(
            f"{what}: {len(unmapped)} unexpected key(s) that no rule maps: {_listing(sorted(unmapped))}"
        )
    if collisions:
        raise ConversionError(f"{what}: several keys map to one name: {_listing(collisions)}")
    if sources is not None:
        sources.update(origin)
    return converted


def _regex_parts(pattern: str) -> list | None:
    """A simple regex as literal text and capture groups: `a\\.(\\d+)\\.b` -> ["a.", ("\\d+",), ".b"].

    None when the pattern has regex syntax outside its groups (then it cannot be turned back into a key).
    """
    parts, literal, i = [], "", 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            literal, i = literal + pattern[i + 1], i + 2
        elif char == "(" and not pattern.startswith("(?", i):
            depth, j = 1, i + 1
            while j < len(pattern) and depth:
                if pattern[j] == "\\":
                    j += 2
                    continue
                depth += {"(": 1, ")": -1}.get(pattern[j], 0)
                j += 1
            if depth:
                return None
            parts += [literal, (pattern[i + 1 : j - 1],)]
            literal, i = "", j
        elif char in ".^$*+?{}[]|()\\":
            return None
        else:
            literal, i = literal + char, i + 1
    return [*parts, literal]


def original_key(converted_key: str, mapping: Mapping[str, str | None]) -> str | None:
    """The source key that `mapping` would rename to `converted_key` (best effort, verified), or None.

    Lets an error about a *missing* converted key name the key the user's checkpoint lacks.
    """
    for pattern, replacement in mapping.items():
        source_parts = _regex_parts(pattern)
        if replacement is None or source_parts is None:
            continue
        groups = [part[0] for part in source_parts if isinstance(part, tuple)]
        target, seen = "", set()
        for index, piece in enumerate(re.split(r"\\(\d+)", replacement)):
            if index % 2 == 0:
                target += re.escape(piece)
            elif int(piece) in seen:
                target += f"(?P=g{piece})"
            elif 1 <= int(piece) <= len(groups):
                target += f"(?P<g{piece}>{groups[int(piece) - 1]})"
                seen.add(int(piece))
            else:
                break
        else:
            match = re.fullmatch(target, converted_key)
            if match is None or len(seen) != len(groups):
                continue
            values, number = [], 0
            for part in source_parts:
                if isinstance(part, tuple):
                    number += 1
                    values.append(match.group(f"g{number}"))
                else:
                    values.append(part)
            candidate = "".join(values)
            renamed = re.sub(f"^(?:{pattern})$", replacement, candidate)
            if re.fullmatch(pattern, candidate) and renamed == converted_key:
                return candidate
    return None


def check_against_model(
    converted: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    what: str,
    sources: Mapping[str, str] | None = None,
    mapping: Mapping[str, str | None] | None = None,
) -> None:
    """Every model tensor present with its shape, nothing extra; names every offending key.

    `model` may live on the meta device (build it under `with torch.device("meta"):` to check full-size
    checkpoints without memory). `sources` (from `map_keys`) adds the original name to each key shown, and
    `mapping` lets missing keys be named by the source key that would have provided them.
    """
    sources = dict(sources or {})
    if mapping is not None:
        for key in set(model.state_dict()) - set(converted):
            found = original_key(key, mapping)
            if found is not None:
                sources[key] = found

    def name(key: str) -> str:
        return f"{key} (from {sources[key]})" if key in sources and sources[key] != key else key

    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(converted[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {_listing([name(k) for k in missing])}")
    if extra:
        problems.append(f"unexpected {len(extra)}: {_listing([name(k) for k in extra])}")
    if wrong:
        shown = [f"{name(k)} {tuple(converted[k].shape)} != {tuple(expected[k])}" for k in wrong]
        problems.append(f"mis-shaped {len(wrong)}: {_listing(shown)}")
    if problems:
        raise ConversionError(f"{what} does not match the architecture; " + "; ".join(problems))


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """`"float32"`/`"bfloat16"`/`"float16"` (or `fp32`/`bf16`/`fp16`, or a `torch.dtype`) -> dtype; None stays None."""
    if name is None or isinstance(name, torch.dtype):
        return name
    dtypes = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
              "float16": torch.float16, "fp16": torch.float16}  # fmt: skip
    if name not in dtypes:
        raise ConversionError(f"Unknown dtype {name!r}; choose float32, bfloat16 or float16.")
    return dtypes[name]


def folder_summary(folder) -> dict:
    """Parameter count, dtypes and size of the safetensors weights in a saved model folder, plus its model_type.

    Reads only the safetensors headers, so it is cheap for multi-GB folders. Tied weights are stored once by
    `save_pretrained`, so `parameters` counts them once.
    """
    from safetensors import safe_open

    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{folder} holds no .safetensors weights.")
    parameters, dtypes, size = 0, set(), 0
    for file in files:
        size += file.stat().st_size
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_slice(key)
                count = 1
                for dim in tensor.get_shape():
                    count *= dim
                parameters += count
                dtypes.add(tensor.get_dtype())
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    return {
        "model_type": config.get("model_type"),
        "parameters": parameters,
        "dtypes": sorted(dtypes),
        "bytes": size,
        "vocab_size": config.get("vocab_size"),
        "d_model": config.get("d_model"),
    }
