"""Writing converted folders all at once or not at all.

A conversion writes several gigabytes and verifies them before anything a user had is touched: it writes into
staging folders beside the output, and only when the block succeeds moves them into place. Several folders (SONAR's
`encoder/` and `decoder/`) are one commit: if any move fails, the ones already made are rolled back, so a new
encoder never sits beside an old decoder. One policy decides what may be replaced: an empty folder, or one that
`is_same_model` recognises as an earlier conversion of the same kind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .checkpoints import ConversionError


def _check_replaceable(target: Path, is_same_model: Callable[[Path], bool] | None) -> None:
    if target.exists():
        if not target.is_dir():
            raise ConversionError(f"Output {target} exists and is not a folder.")
        if any(target.iterdir()) and not (is_same_model and is_same_model(target)):
            raise ConversionError(
                f"Output folder {target} already holds other files (a different model?). "
                "Choose an empty or new folder."
            )


def _make_parents(path: Path) -> Path | None:
    """mkdir -p `path`; return the topmost folder this created (to remove on failure), or None."""
    missing = None
    for ancestor in [path, *path.parents]:
        if ancestor.exists():
            break
        missing = ancestor
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConversionError(f"Cannot write into the folder {path}: {error}") from error
    return missing


def _move_all_into_place(moves: list[tuple[Path, Path]], backup_root: Path) -> None:
    """Move each staging folder onto its target; on any failure put every target back as it was."""
    done: list[tuple[Path, Path, Path | None]] = []  # (staging, target, backup of the old target)
    try:
        for index, (staging, target) in enumerate(moves):
            backup = None
            if target.exists():
                backup = backup_root / f".old-{index}"
                target.rename(backup)
            done.append((staging, target, backup))
            staging.rename(target)
    except BaseException:
        for staging, target, backup in reversed(done):
            if target.exists() and not staging.exists():
                target.rename(staging)
            if backup is not None and backup.exists():
                backup.rename(target)
        raise


@contextlib.contextmanager
def _staged(targets: Sequence[Path], is_same_model: Callable[[Path], bool] | None, root: Path) -> Iterator[list[Path]]:
    """Staging folders in a temporary folder under `root` (same file system, so moves are renames)."""
    for target in targets:
        _check_replaceable(target, is_same_model)
    created = _make_parents(root)
    staging_root = None
    try:
        try:
            staging_root = Path(tempfile.mkdtemp(prefix=".sonar-llm-hf.tmp-", dir=root))
        except OSError as error:
            raise ConversionError(f"Cannot write next to the output folder {targets[0]}: {error}") from error
        staging = [staging_root / f"new-{index}" for index in range(len(targets))]
        for folder in staging:
            folder.mkdir()
        yield staging
        made_parent = [t.parent for t in targets if not t.parent.exists()]
        for parent in made_parent:
            parent.mkdir(parents=True, exist_ok=True)
        try:
            _move_all_into_place(list(zip(staging, targets)), staging_root)
        except BaseException:
            for parent in made_parent:
                with contextlib.suppress(OSError):
                    parent.rmdir()
            raise
        created = None  # success: keep the folders this call created
    finally:
        if staging_root is not None:
            shutil.rmtree(staging_root, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)


@contextlib.contextmanager
def atomic_output_dir(output, is_same_model: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a staging folder that becomes `output` only if the block succeeds.

    An existing `output` is replaced only when empty or when `is_same_model(output)` says it holds this model;
    otherwise the conversion is refused, so nothing a user had is overwritten and nothing half-written is left.
    """
    output = Path(output)
    with _staged([output], is_same_model, root=output.parent) as (staging,):
        yield staging


@contextlib.contextmanager
def atomic_output_dirs(
    output, names: Sequence[str], is_same_model: Callable[[Path, str], bool] | None = None
) -> Iterator[dict[str, Path]]:
    """Yield `{name: staging folder}`; all become `output/<name>` together only if the block succeeds.

    Same replacement policy as `atomic_output_dir`, per name (`is_same_model(path, name)`). If one move fails the
    others are undone: the folders are replaced together or not at all.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConversionError(f"Output {output} exists and is not a folder.")
    targets = [output / name for name in names]
    same = None
    if is_same_model is not None:
        same = lambda path: is_same_model(path, path.name)  # noqa: E731
    with _staged(targets, same, root=output.parent) as staging:
        yield dict(zip(names, staging))


__all__ = ["atomic_output_dir", "atomic_output_dirs"]
