"""Publish a converted folder to the Hugging Face Hub (used by convert_sonar_llm_to_hf.py --push-to-hub).

    python conversion/publish.py sonar-llm-900m org/sonar-llm-900m [--private] [--revision v1] [--commit-message M]

One commit: the repo (and the branch, with --revision) is created if missing, the folder uploaded, and weight shards
left over from an earlier upload deleted in the same commit (a re-conversion to another dtype changes the shards).
Authentication is huggingface_hub's own (`hf auth login` or HF_TOKEN).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Shards from a previous upload that this folder no longer has would otherwise linger next to the new index.
STALE_WEIGHTS = ["*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin"]


class PublishError(RuntimeError):
    """The folder is written, but publishing it failed; the message says how to retry."""


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
    missing = [name for name in ("config.json", "README.md") if not (folder / name).is_file()]
    if missing:
        raise PublishError(f"{folder} holds no {' or '.join(missing)}: not a converted folder, nothing published.")
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
    args = parser.parse_args(argv)
    try:
        commit = publish_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                                commit_message=args.commit_message)  # fmt: skip
    except PublishError as error:
        print(f"publish: error: {error}", file=sys.stderr)
        return 2
    print(f"published: {getattr(commit, 'commit_url', commit)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
