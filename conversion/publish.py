"""Publish a converted folder to the Hugging Face Hub (used by convert_sonar_llm_to_hf.py --push-to-hub).

    python conversion/publish.py sonar-llm-900m org/sonar-llm-900m [--private] [--revision v1] [--commit-message M]
    python conversion/publish.py sonar-llm-900m org/sonar-llm-900m --dry-run    # list what would be uploaded

One commit: the repo (and the branch, with --revision) is created if missing, the folder uploaded, and files that an
earlier upload of a conversion left there and this folder no longer holds (weight shards of another dtype) deleted in
the same commit. `--dry-run` lists every file the upload would send (huggingface_hub's own selection: everything but
`.git/` and `.cache/huggingface/`) with its size, and contacts nothing. Authentication is huggingface_hub's own
(`hf auth login` or HF_TOKEN).

The converters' rule for folders (sonar_llm_hf/conversion/output.py) holds on both sides. Locally, the folder must
hold exactly what its conversion wrote. On the Hub, only files that the repository's own manifest lists (an earlier
conversion's upload) are replaced or deleted: an upload that would overwrite any other file (an original
pytorch_model.bin, a card edited on the Hub) is refused by name before anything is sent, and other files the
repository holds are left as they are and named.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

HUB_OWN = {".gitattributes"}  # what the Hub writes into a new repository


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
    lines.append("and delete remote files that an earlier conversion uploaded (the repository's manifest lists them) "
                 "and this folder does not hold. An upload that would overwrite a remote file no conversion uploaded "
                 "is refused (the dry run does not contact the Hub to check).")  # fmt: skip
    return "\n".join(lines)


def _changed_on_the_hub(api, repo_id: str, revision: str | None, recorded: dict[str, str]) -> list[str]:
    """The files of `recorded` (name -> SHA-256 when uploaded) whose content on the Hub differs now (a card edited
    in the browser): LFS files by the SHA-256 the Hub keeps, small files by downloading them."""
    import hashlib

    changed = []
    if not recorded:
        return changed
    for info in api.get_paths_info(repo_id, sorted(recorded), repo_type="model", revision=revision):
        lfs = getattr(info, "lfs", None)
        if lfs is not None:
            digest = lfs["sha256"] if isinstance(lfs, dict) else lfs.sha256
        else:
            path = api.hf_hub_download(repo_id, info.path, repo_type="model", revision=revision)
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if digest != recorded[info.path]:
            changed.append(info.path)
    return changed


def remote_changes(api, repo_id: str, revision: str | None, local: set[str]) -> tuple[list[str], list[str]]:
    """(remote files to delete, remote files left as they are) for uploading files `local` to `repo_id`.

    Only files listed in the repository's own manifest (uploaded by an earlier conversion) and unchanged since may be
    replaced or deleted; a `PublishError` names any other remote file the upload would overwrite."""
    from sonar_llm_hf.conversion.output import MANIFEST

    remote = set(api.list_repo_files(repo_id, repo_type="model", revision=revision))
    recorded = {}
    if MANIFEST in remote:
        path = api.hf_hub_download(repo_id, MANIFEST, repo_type="model", revision=revision)
        recorded = json.loads(Path(path).read_text())["files"]
    edited = _changed_on_the_hub(api, repo_id, revision, {name: recorded[name] for name in remote & set(recorded)})
    ours = (set(recorded) - set(edited)) | ({MANIFEST} if recorded else set())
    theirs = remote - ours - HUB_OWN
    overwritten = sorted(theirs & local)
    if overwritten:
        raise PublishError(
            f"{repo_id} (branch {revision or 'main'}) holds {len(overwritten)} file(s) that no conversion uploaded "
            f"and this upload would overwrite: {', '.join(overwritten[:10])}. Nothing was uploaded. Publish to a new "
            "repository or branch (--revision), or remove or rename those files there first."
        )
    return sorted((remote & ours) - local), sorted(theirs)


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
        # 3. what may go: only files an earlier conversion uploaded; nothing of anyone else's is overwritten
        stale, kept = remote_changes(api, repo_id, revision, {name for name, _ in files_to_upload(folder)})
        if kept:
            print(f"publish: leaving {len(kept)} remote file(s) that no conversion uploaded as they are: "
                  f"{', '.join(kept[:10])}", file=sys.stderr)  # fmt: skip
        # 4. one commit with every file, the stale ones of an earlier conversion removed
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload {repo_id.split('/')[-1]} converted with sonar-llm-hf",
            delete_patterns=[glob.escape(name) for name in stale] or None,
        )
    except PublishError:
        raise
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
