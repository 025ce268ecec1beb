"""Publish a converted folder to the Hugging Face Hub (used by convert_sonar_llm_to_hf.py --push-to-hub).

    python conversion/publish.py sonar-llm-900m org/sonar-llm-900m [--private] [--revision v1] [--commit-message M]
    python conversion/publish.py sonar-llm-900m org/sonar-llm-900m --dry-run    # list what would be uploaded

One commit: the repo (and the branch, with --revision) is created if missing, the folder uploaded, and weight shards
left over from an earlier upload deleted in the same commit (a re-conversion to another dtype changes the shards).
`--dry-run` lists every file the upload would send (huggingface_hub's own selection: everything but `.git/` and
`.cache/huggingface/`) with its size, and contacts nothing. Authentication is huggingface_hub's own (`hf auth login`
or HF_TOKEN).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Shards from a previous upload that this folder no longer has would otherwise linger next to the new index.
STALE_WEIGHTS = ["*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin"]


class PublishError(RuntimeError):
    """The folder is written, but publishing it failed; the message says how to retry."""


def files_to_upload(folder) -> list[tuple[str, int]]:
    """(path in the repo, bytes) of every file `HfApi.upload_folder` sends from `folder`, with its default ignores."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.glob("**/*")) if p.is_file()}
    return [(name, files[name]) for name in filter_repo_objects(files, ignore_patterns=DEFAULT_IGNORE_PATTERNS)]


def _check_folder(folder: Path) -> None:
    """Publish only a converter's own output, unchanged: the upload deletes remote weight files this folder lacks,
    so a folder with files of unknown origin must not stand for the repository."""
    from sonar_llm_hf.conversion.output import MANIFEST, foreign_files

    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder: nothing published.")
    missing = [name for name in ("config.json", "README.md", MANIFEST) if not (folder / name).is_file()]
    if missing:
        raise PublishError(f"{folder} holds no {' or '.join(missing)}: not a converted folder, nothing published.")
    uploaded = {name for name, _ in files_to_upload(folder)}  # huggingface_hub never sends .git/ or its .cache/
    foreign = [name for name in foreign_files(folder) if name in uploaded]
    if foreign:
        raise PublishError(
            f"{folder} holds {len(foreign)} file(s) the conversion did not write, or that changed since: "
            f"{', '.join(foreign[:10])}. Nothing published: re-run the converter, or move those files away."
        )


def describe_upload(folder, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """What `publish_folder` would do, file by file; nothing is contacted."""
    folder = Path(folder)
    _check_folder(folder)
    files = files_to_upload(folder)
    lines = [f"would upload {len(files)} files ({sum(size for _, size in files) / 2**20:,.1f} MiB) from {folder} to "
             f"{repo_id} (branch {revision or 'main'}; created {'private' if private else 'public'} if missing), "
             "in one commit:"]  # fmt: skip
    lines += [f"  {name}  {size:,} bytes" for name, size in files]
    lines.append(f"and delete remote files matching {', '.join(STALE_WEIGHTS)} that this folder does not hold.")
    return "\n".join(lines)


def publish_folder(
    folder,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    api=None,
):
    """Create `repo_id` (and branch `revision`) if needed, upload `folder` in one commit; return the commit info."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    _check_folder(folder)
    api = api or HfApi()
    try:
        # 1. the repository (an existing one keeps its visibility)
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        # 2. the branch, forked from main
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        # 3. one commit with every file, stale shards removed
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} converted with sonar-llm-hf",
            delete_patterns=STALE_WEIGHTS,
        )
    except Exception as error:  # network, authentication, permissions: the local folder stays valid
        raise PublishError(
            f"Publishing {folder} to {repo_id} failed ({type(error).__name__}: {error}). The folder is complete; "
            f"retry with `python conversion/publish.py {folder} {repo_id}`."
        ) from error


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("repo_id")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--revision", help="branch to upload to (created from main if missing)")
    parser.add_argument("--commit-message")
    parser.add_argument("--dry-run", action="store_true", help="list every file that would be uploaded; send nothing")
    args = parser.parse_args(argv)
    try:
        if args.dry_run:
            print(describe_upload(args.folder, args.repo_id, private=args.private, revision=args.revision))
            return 0
        commit = publish_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                                commit_message=args.commit_message)  # fmt: skip
    except PublishError as error:
        print(f"publish: error: {error}", file=sys.stderr)
        return 2
    print(f"published: {getattr(commit, 'commit_url', commit)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
