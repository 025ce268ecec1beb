"""Shared pieces of the checkpoint converters: safe loading, strict regex key mapping, atomic folder writing.

Not remote code: only the conversion scripts and tests import it.
"""

from __future__ import annotations

import contextlib
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch

# fairseq2 orders the first four ids (<pad>, <unk>, <s>, </s>); HF NLLB orders them (<s>, <pad>, </s>, <unk>).
# hf[[0, 1, 2, 3]] = fs2[[2, 0, 3, 1]]; every other row keeps its index.
FS2_TO_HF_SPECIAL_ROWS = [2, 0, 3, 1]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted faithfully; the message names what is wrong."""


def load_checkpoint(path, allowed_globals: list | None = None) -> dict:
    """`torch.load(weights_only=True)`: tensors and plain containers only, never arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"No checkpoint file at {path}.")
    context = torch.serialization.safe_globals(allowed_globals) if allowed_globals else contextlib.nullcontext()
    try:
        with context:
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"Refusing to load {path}: it is not a plain tensor checkpoint (weights_only=True rejected it, so it "
            f"was not executed). Details: {str(error).splitlines()[0]}"
        ) from error
    except (RuntimeError, EOFError) as error:
        raise ConversionError(f"Could not read {path} as a PyTorch checkpoint: {error}") from error


def permute_special_rows(weight: torch.Tensor) -> torch.Tensor:
    """Reorder the four special-token rows of an embedding or LM head from fairseq2's order to HF NLLB's."""
    weight = weight.clone()
    weight[:4] = weight[FS2_TO_HF_SPECIAL_ROWS]
    return weight


def map_keys(
    state_dict: Mapping[str, torch.Tensor],
    mapping: Mapping[str, str | None],
    what: str,
) -> dict[str, torch.Tensor]:
    """Rename every key with the first matching regex of `mapping` (None drops it); refuse unmapped keys."""
    converted, unmapped = {}, []
    for key, tensor in state_dict.items():
        for pattern, replacement in mapping.items():
            if re.fullmatch(pattern, key):
                if replacement is not None:
                    converted[re.sub(f"^{pattern}$", replacement, key)] = tensor
                break
        else:
            unmapped.append(key)
    if unmapped:
        shown = ", ".join(sorted(unmapped)[:10]) + (" …" if len(unmapped) > 10 else "")
        raise ConversionError(f"{what}: {len(unmapped)} unexpected key(s) that no rule maps: {shown}")
    return converted


def check_against_model(converted: Mapping[str, torch.Tensor], model: torch.nn.Module, what: str) -> None:
    """Every model tensor present with its shape, nothing extra; names every offending key."""
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(converted[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:10])}")
    if extra:
        problems.append(f"unexpected {len(extra)}: {', '.join(extra[:10])}")
    if wrong:
        problems.append(
            "mis-shaped: " + ", ".join(f"{k} {tuple(converted[k].shape)} != {tuple(expected[k])}" for k in wrong[:10])
        )
    if problems:
        raise ConversionError(f"{what} does not match the architecture; " + "; ".join(problems))


def parse_dtype(name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    dtypes = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
              "float16": torch.float16, "fp16": torch.float16}  # fmt: skip
    if name not in dtypes:
        raise ConversionError(f"Unknown dtype {name!r}; choose float32, bfloat16 or float16.")
    return dtypes[name]


@contextlib.contextmanager
def atomic_output_dir(output: Path, is_same_model: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Write into a temporary sibling folder and move it into place only if everything succeeded.

    An existing `output` is replaced only when empty or when `is_same_model(output)` says it holds this model;
    otherwise the conversion is refused, so nothing a user had is overwritten and nothing half-written is left.
    """
    output = Path(output)
    if output.exists():
        if not output.is_dir():
            raise ConversionError(f"Output {output} exists and is not a folder.")
        if any(output.iterdir()) and not (is_same_model and is_same_model(output)):
            raise ConversionError(
                f"Output folder {output} already holds other files (a different model?). Choose an empty or new folder."
            )
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp-", dir=parent))
    except OSError as error:
        raise ConversionError(f"Cannot write the output folder {output}: {error}") from error
    try:
        yield staging
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
