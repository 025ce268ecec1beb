"""--push-to-hub and publish.py: the real HfApi code path, with only its network methods replaced; what a user gets
from a published folder (a fresh cache) and from the Space folder (a fresh virtualenv)."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import filter_repo_objects
from test_convert_sonar_llm import CHECKPOINT, CONFIG, sonar_dir  # noqa: F401 (fixture)
from test_remote_code import run_without_package
from transformers import AutoModel

from sonar_llm_hf.conversion.output import MANIFEST, write_manifest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "conversion"))
sys.path.insert(0, str(ROOT / "examples" / "space"))
import convert_sonar_llm_to_hf as cli  # noqa: E402
import publish  # noqa: E402
from build_space import build_space  # noqa: E402


class RecordedHub(list):
    """The calls that would reach the Hub, and the files of the one repository there (`files`: path -> bytes)."""

    def __init__(self):
        super().__init__()
        self.files = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}


@pytest.fixture
def hub(monkeypatch, tmp_path_factory):
    """Records what would be sent to the Hub and keeps the repository's files; everything above the HfApi network
    methods runs for real (`upload_folder` applies its commit: `delete_patterns` as huggingface_hub matches them)."""
    calls = RecordedHub()
    downloads = tmp_path_factory.mktemp("hub_downloads")

    def record(name, result=None):
        def method(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            if name == "upload_folder":  # what is uploaded is the finished folder
                folder = Path(kwargs["folder_path"])
                calls[-1][2]["files"] = sorted(p.name for p in folder.iterdir())
                calls[-1][2]["card"] = ModelCard.load(folder / "README.md")
                deleted = filter_repo_objects(list(calls.files), allow_patterns=kwargs.get("delete_patterns") or [])
                for path in list(deleted) if kwargs.get("delete_patterns") else []:
                    del calls.files[path]
                calls.files.update({p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()})
            return result

        return method

    def download(self, repo_id, filename, **kwargs):
        path = downloads / f"{len(list(downloads.iterdir()))}-{filename}"
        path.write_bytes(calls.files[filename])
        return str(path)

    def paths_info(self, repo_id, paths, **kwargs):
        def info(path):
            data = calls.files[path]
            lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            return RepoFile(
                path=path, size=len(data), oid="0" * 40, lfs=lfs if path.endswith(".safetensors") else None
            )

        return [info(path) for path in paths if path in calls.files]

    monkeypatch.setattr(HfApi, "create_repo", record("create_repo", "https://huggingface.co/org/tiny"))
    monkeypatch.setattr(HfApi, "create_branch", record("create_branch"))
    monkeypatch.setattr(HfApi, "upload_folder", record("upload_folder", "https://huggingface.co/org/tiny/commit/abc"))
    monkeypatch.setattr(HfApi, "list_repo_files", lambda self, repo_id, **kwargs: sorted(calls.files))
    monkeypatch.setattr(HfApi, "hf_hub_download", download)
    monkeypatch.setattr(HfApi, "get_paths_info", paths_info)
    return calls


def convert_args(sonar_dir, output, *extra):
    return ["--checkpoint", str(CHECKPOINT), "--sonar", str(sonar_dir), "--config", str(CONFIG), "--output",
            str(output), *extra]  # fmt: skip


def test_push_to_hub_with_revision_and_private(hub, sonar_dir, tmp_path, capsys):
    output = tmp_path / "out"
    assert cli.main(convert_args(sonar_dir, output, "--push-to-hub", "org/tiny", "--private", "--revision", "v1",
                                 "--commit-message", "first")) == 0  # fmt: skip
    assert [name for name, _, _ in hub] == ["create_repo", "create_branch", "upload_folder"]
    _, args, kwargs = hub[0]
    assert args == ("org/tiny",) and kwargs == {"repo_type": "model", "private": True, "exist_ok": True}
    _, args, kwargs = hub[1]
    assert args == ("org/tiny",) and kwargs == {"branch": "v1", "repo_type": "model", "exist_ok": True}
    _, _, kwargs = hub[2]
    assert kwargs["repo_id"] == "org/tiny" and kwargs["folder_path"] == str(output)
    assert kwargs["revision"] == "v1" and kwargs["commit_message"] == "first" and kwargs["repo_type"] == "model"
    assert kwargs["delete_patterns"] is None  # a new repository: nothing of an earlier conversion to remove
    written = {"model.safetensors", "config.json", "README.md", "tokenizer.json", "modeling_sonar_llm.py"}
    assert written <= set(kwargs["files"])
    assert 'AutoModel.from_pretrained("org/tiny", trust_remote_code=True)' in kwargs["card"].text
    assert kwargs["card"].data.model_name == "tiny"
    assert "published: https://huggingface.co/org/tiny/commit/abc" in capsys.readouterr().out


def test_push_to_main_public(hub, sonar_dir, tmp_path):
    report = cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", config=CONFIG, push_to_hub="org/tiny")
    assert [name for name, _, _ in hub] == ["create_repo", "upload_folder"]  # no branch to create
    assert hub[0][2]["private"] is False and hub[1][2]["revision"] is None
    assert hub[1][2]["commit_message"] == "Upload tiny converted with sonar-llm-hf"
    assert report["commit"].endswith("/commit/abc")


def test_failed_upload_keeps_the_folder(sonar_dir, tmp_path, monkeypatch, capsys):
    def refuse(self, *args, **kwargs):
        raise PermissionError("403 Forbidden: you cannot write to org/tiny")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    output = tmp_path / "out"
    assert cli.main(convert_args(sonar_dir, output, "--push-to-hub", "org/tiny")) == 3
    err = capsys.readouterr().err
    assert "403 Forbidden" in err and f"conversion/publish.py {output} org/tiny" in err
    assert (output / "model.safetensors").exists()  # the conversion itself succeeded


def test_publish_command(hub, tmp_path, capsys):
    assert publish.main([str(tmp_path), "org/tiny"]) == 2  # not a converted folder
    assert "holds no config.json or README.md or sonar_llm_hf_manifest.json" in capsys.readouterr().err and hub == []
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# tiny\n")
    write_manifest(tmp_path, "sonar_llm")  # what a conversion records of its own files
    (tmp_path / "mine.py").write_text("# a user's file: the upload would stand for the repository")
    assert publish.main([str(tmp_path), "org/tiny"]) == 2
    assert "1 file(s) the conversion did not write, or that changed since: mine.py" in capsys.readouterr().err
    assert hub == []
    (tmp_path / "mine.py").unlink()
    assert publish.main([str(tmp_path), "org/tiny", "--revision", "main"]) == 0
    assert [name for name, _, _ in hub] == ["create_repo", "upload_folder"]  # main exists already


# -- what a user gets: the dry run, the published folder from a fresh cache, the Space ------------------------------


def test_dry_run_lists_every_file_it_would_upload(hub, sonar_dir, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out"
    cli.convert(CHECKPOINT, sonar_dir, output, config=CONFIG)
    (output / ".cache" / "huggingface").mkdir(parents=True)
    (output / ".cache" / "huggingface" / "upload.lock").write_text("")  # huggingface_hub never uploads these
    assert publish.main([str(output), "org/tiny", "--dry-run", "--revision", "v2"]) == 0
    assert hub == []  # nothing contacted
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    # the selection huggingface_hub's own upload_folder makes (its YAML check is the only network call there)
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS

    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, *a, **k: None)
    additions = HfApi()._prepare_upload_folder_additions(output, "", ignore_patterns=list(DEFAULT_IGNORE_PATTERNS))
    assert listed == sorted(op.path_in_repo for op in additions)
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json", "modeling_sonar_llm.py"} <= set(listed)
    assert f"would upload {len(listed)} files" in out and "to org/tiny (branch v2;" in out
    assert "delete remote files that an earlier conversion uploaded" in out


def test_a_republish_replaces_only_what_a_conversion_uploaded(hub, sonar_dir, tmp_path, capsys):
    """The second upload deletes the shards the first one left (listed in the repository's manifest) and leaves
    a file that no conversion uploaded as it is, naming it."""
    output = tmp_path / "out"
    cli.convert(CHECKPOINT, sonar_dir, output, config=CONFIG, push_to_hub="org/tiny")
    first = dict(hub.files)
    assert first["model.safetensors"] == (output / "model.safetensors").read_bytes()
    # the earlier conversion had written two shards; someone also uploaded the original checkpoint
    manifest = json.loads(first[MANIFEST])
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        hub.files[shard] = b"old shard"
        manifest["files"][shard] = hashlib.sha256(b"old shard").hexdigest()
    hub.files[MANIFEST] = json.dumps(manifest).encode()
    hub.files["pytorch_model.bin"] = b"the original weights"
    assert publish.main([str(output), "org/tiny"]) == 0
    assert sorted(hub[-1][2]["delete_patterns"]) == ["model-00001-of-00002.safetensors",
                                                     "model-00002-of-00002.safetensors"]  # fmt: skip
    assert set(hub.files) == set(first) | {"pytorch_model.bin"}
    assert "leaving 1 remote file(s) that no conversion uploaded as they are: pytorch_model.bin" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("case", ["card edited on the Hub", "repository made by hand"])
def test_a_file_no_conversion_uploaded_is_never_overwritten(hub, sonar_dir, tmp_path, capsys, case):
    output = tmp_path / "out"
    cli.convert(CHECKPOINT, sonar_dir, output, config=CONFIG)
    if case == "card edited on the Hub":
        assert publish.main([str(output), "org/tiny"]) == 0
        hub.files["README.md"] += b"\nA paragraph its owner wrote in the browser.\n"
    else:
        hub.files.update({"README.md": b"# my model\n", "config.json": b"{}"})
    before, calls = dict(hub.files), len(hub)
    assert publish.main([str(output), "org/tiny"]) == 2
    err = capsys.readouterr().err
    named = "README.md" if case == "card edited on the Hub" else "README.md, config.json"
    assert f"that no conversion uploaded and this upload would overwrite: {named}." in err
    assert hub.files == before and [name for name, _, _ in hub[calls:]] == ["create_repo"]  # nothing uploaded


def test_a_published_folder_generates_from_a_fresh_cache(sonar_dir, tmp_path, monkeypatch):
    """What the (mocked) Hub received, served back as a user's fresh cache, loads by repo id and generates: with the
    package, and with remote code only in a process without it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    hf_home = tmp_path / "hf"  # run_without_package's HF_HOME
    repo = hf_home / "hub" / "models--org--tiny"

    def upload_folder(self, **kwargs):  # the Hub stores the files upload_folder selects, as one commit
        for name, _ in publish.files_to_upload(kwargs["folder_path"]):
            target = repo / "snapshots" / commit / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(kwargs["folder_path"]) / name, target)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        return f"https://huggingface.co/org/tiny/commit/{commit}"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: "https://huggingface.co/org/tiny")
    monkeypatch.setattr(HfApi, "list_repo_files", lambda self, *a, **k: [".gitattributes"])  # a new repository
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    local = tmp_path / "converted"
    cli.convert(CHECKPOINT, sonar_dir, local, config=CONFIG, push_to_hub="org/tiny")
    prompt = [["The cat sat on the mat.", "It was happy."]]
    expected = AutoModel.from_pretrained(local).generate(prompt, num_beams=1, max_new_sentences=2, max_length=12)

    # with the package: the repo id resolves in the cache, the tokenizer comes along from the same cache
    model = AutoModel.from_pretrained("org/tiny", cache_dir=hf_home / "hub", local_files_only=True)
    assert model.tokenizer is not None
    assert model.generate(prompt, num_beams=1, max_new_sentences=2, max_length=12).sentences == expected.sentences
    # without it: a fresh process, HF_HUB_OFFLINE=1, HF_HOME holding only what was uploaded
    code = f"""
import json
from transformers import AutoModel
model = AutoModel.from_pretrained("org/tiny", trust_remote_code=True)
out = model.generate({prompt!r}, num_beams=1, max_new_sentences=2, max_length=12)
print(json.dumps({{"module": type(model).__module__, "sentences": out.sentences}}))
"""
    remote = run_without_package(code, tmp_path)
    assert remote["module"].startswith("transformers_modules") and remote["sentences"] == expected.sentences


def test_the_space_starts_from_its_requirements_in_a_fresh_virtualenv(tmp_path):
    """The Space folder (examples/space/build_space.py) installs from PyPI names only and its app starts with the
    package it carries: a virtualenv that sees the dependencies (a .pth file) but not this checkout, offline."""
    import tomllib

    from packaging.requirements import Requirement

    space = build_space(tmp_path / "space")
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "requirements.txt", "sonar_llm_hf",
                                                       "sonar_llm_hf_manifest.json"]  # fmt: skip
    lines = [line.strip() for line in (space / "requirements.txt").read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    assert all(r.url is None for r in requirements)  # names on an index, never a URL or a file of the Space
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {Requirement(d).name for d in pyproject} <= {r.name for r in requirements}

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "transformers").is_dir())
    (site / "dependencies.pth").write_text(str(deps) + "\n")  # its .pth files (the editable install) stay unread
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    python = str(venv / "bin" / "python")
    pip = subprocess.run([python, "-m", "pip", "install", "--dry-run", "--no-index", "-r", "requirements.txt"],
                         cwd=space, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    assert "Would install" not in pip.stdout  # every requirement is met offline by what exists
    code = """
import json, runpy, sys
sys.argv = ["app.py", "--help"]
try:
    runpy.run_path("app.py", run_name="__main__")
except SystemExit as exit:
    assert exit.code in (0, None), exit.code
import app, sonar_llm_hf
from transformers import AutoModel
demo = app.build_demo(AutoModel.from_pretrained(sonar_llm_hf.demo.default_model_path()))
print(json.dumps({"package": sonar_llm_hf.__file__, "blocks": type(demo).__name__}))
"""
    result = subprocess.run([python, "-c", code], cwd=space, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    started = json.loads(result.stdout.strip().splitlines()[-1])
    assert started == {"package": str(space / "sonar_llm_hf" / "__init__.py"), "blocks": "Blocks"}
    assert "--model" in result.stdout  # app.py --help ran
