"""--push-to-hub: the real HfApi code path, with only its network methods replaced."""

import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard
from test_convert_sonar_llm import CHECKPOINT, CONFIG, sonar_dir  # noqa: F401 (fixture)

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "conversion"))
import convert_sonar_llm_to_hf as cli  # noqa: E402
import publish  # noqa: E402


@pytest.fixture
def hub(monkeypatch):
    """Records what would be sent to the Hub; everything above the HfApi methods runs for real."""
    calls = []

    def record(name, result=None):
        def method(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            if name == "upload_folder":  # what is uploaded is the finished folder
                folder = Path(kwargs["folder_path"])
                calls[-1][2]["files"] = sorted(p.name for p in folder.iterdir())
                calls[-1][2]["card"] = ModelCard.load(folder / "README.md")
            return result

        return method

    monkeypatch.setattr(HfApi, "create_repo", record("create_repo", "https://huggingface.co/org/tiny"))
    monkeypatch.setattr(HfApi, "create_branch", record("create_branch"))
    monkeypatch.setattr(HfApi, "upload_folder", record("upload_folder", "https://huggingface.co/org/tiny/commit/abc"))
    return calls


def convert_args(sonar_dir, output, *extra):  # noqa: F811
    return ["--checkpoint", str(CHECKPOINT), "--sonar", str(sonar_dir), "--config", str(CONFIG), "--output",
            str(output), *extra]  # fmt: skip


def test_push_to_hub_with_revision_and_private(hub, sonar_dir, tmp_path, capsys):  # noqa: F811
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
    assert "*.safetensors" in kwargs["delete_patterns"]  # stale shards of an earlier upload go in the same commit
    written = {"model.safetensors", "config.json", "README.md", "tokenizer.json", "modeling_sonar_llm.py"}
    assert written <= set(kwargs["files"])
    assert 'AutoModel.from_pretrained("org/tiny", trust_remote_code=True)' in kwargs["card"].text
    assert kwargs["card"].data.model_name == "tiny"
    assert "published: https://huggingface.co/org/tiny/commit/abc" in capsys.readouterr().out


def test_push_to_main_public(hub, sonar_dir, tmp_path):  # noqa: F811
    report = cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", config=CONFIG, push_to_hub="org/tiny")
    assert [name for name, _, _ in hub] == ["create_repo", "upload_folder"]  # no branch to create
    assert hub[0][2]["private"] is False and hub[1][2]["revision"] is None
    assert hub[1][2]["commit_message"] == "Upload tiny converted with sonar-llm-hf"
    assert report["commit"].endswith("/commit/abc")


def test_failed_upload_keeps_the_folder(sonar_dir, tmp_path, monkeypatch, capsys):  # noqa: F811
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
    assert "holds no config.json or README.md" in capsys.readouterr().err and hub == []
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("---\nlicense: cc-by-nc-4.0\n---\n# tiny\n")
    assert publish.main([str(tmp_path), "org/tiny", "--revision", "main"]) == 0
    assert [name for name, _, _ in hub] == ["create_repo", "upload_folder"]  # main exists already
