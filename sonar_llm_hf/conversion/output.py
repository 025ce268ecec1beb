"""Writing converted folders all at once or not at all.

A conversion writes several gigabytes and verifies them before anything a user had is touched: it writes into
staging folders beside the output, and only when the block succeeds moves them into place. Several folders (SONAR's
`encoder/` and `decoder/`) are one commit: if any move fails, the ones already made are rolled back, so a new
encoder never sits beside an old decoder.

One rule decides what may be replaced, for every tool that writes a folder (both converters, `convert_all.py`, the
Space builder) and for what `publish.py` uploads: a folder is ours to replace only if it is empty or holds exactly
the files an earlier run wrote, unchanged. Each run records them, with their SHA-256, in `MANIFEST`; any other
file (a user's `*.py`, `*.model`, notes) or a changed one makes the run refuse, naming it, and touch nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from .checkpoints import ConversionError

MANIFEST = "sonar_llm_hf_manifest.json"


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder, kind: str) -> None:
    """Record every file of `folder` with its SHA-256, so that a later run may replace exactly these files."""
    folder = Path(folder)
    files = {name: _sha256(folder / name) for name in _files(folder) if name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"written_by": "sonar-llm-hf", "kind": kind, "files": files}, indent=1))


def foreign_files(folder) -> list[str]:
    """The files of `folder` that no earlier run wrote as they are now (all of them if it has no manifest)."""
    folder = Path(folder)
    try:
        recorded = json.loads((folder / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    foreign = []
    for name in _files(folder):
        if name == MANIFEST and recorded:
            continue
        path = folder / name
        if name not in recorded or path.is_symlink() or _sha256(path) != recorded[name]:
            foreign.append(name)
    return foreign


def check_replaceable(target: Path) -> None:
    """Refuse, naming the files, unless `target` is absent, empty, or exactly an earlier run's output."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ConversionError(f"Output {target} exists and is not a folder.")
    foreign = foreign_files(target)
    if foreign:
        shown = ", ".join(foreign[:10]) + (f", ... ({len(foreign) - 10} more)" if len(foreign) > 10 else "")
        raise ConversionError(
            f"Output folder {target} holds {len(foreign)} file(s) that no earlier conversion wrote, or that changed "
            f"since: {shown}. Nothing was touched; choose a new or empty folder, or move those files away."
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
def _staged(targets: Sequence[Path], kinds: Sequence[str], root: Path) -> Iterator[list[Path]]:
    """Staging folders in a temporary folder under `root` (same file system, so moves are renames); each gets its
    manifest once the block has written it."""
    for target in targets:
        check_replaceable(target)
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
        for folder, kind in zip(staging, kinds):
            write_manifest(folder, kind)
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
def atomic_output_dir(output, kind: str = "model") -> Iterator[Path]:
    """Yield a staging folder that becomes `output` only if the block succeeds.

    An existing `output` is replaced only when empty or holding exactly an earlier run's files (`MANIFEST`);
    otherwise the run is refused, so nothing a user had is overwritten and nothing half-written is left.
    """
    output = Path(output)
    with _staged([output], [kind], root=output.parent) as (staging,):
        yield staging


@contextlib.contextmanager
def atomic_output_dirs(output, names: Sequence[str], kind: str = "model") -> Iterator[dict[str, Path]]:
    """Yield `{name: staging folder}`; all become `output/<name>` together only if the block succeeds.

    Same replacement rule as `atomic_output_dir`, per name. If one move fails the others are undone: the folders
    are replaced together or not at all.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConversionError(f"Output {output} exists and is not a folder.")
    targets = [output / name for name in names]
    with _staged(targets, [f"{kind}/{name}" for name in names], root=output.parent) as staging:
        yield dict(zip(names, staging))


__all__ = [
    "MANIFEST",
    "atomic_output_dir",
    "atomic_output_dirs",
    "check_replaceable",
    "foreign_files",
    "write_manifest",
]
