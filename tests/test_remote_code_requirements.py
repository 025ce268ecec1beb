"""A Hub user without a package the model code needs gets transformers' error naming it, never a model that
silently behaves differently. Checked in a virtualenv where the package is truly missing: its site-packages links
every installed distribution except that package and this one (a `.pth` to the dev site-packages would bring
everything back)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sonar_llm_hf
from sonar_llm_hf.conversion.sonar import convert_sonar
from sonar_llm_hf.testing.tiny import make_fs2_sonar_state_dict, train_tiny_spm

MODELS = Path(sonar_llm_hf.__file__).parent / "models"
BUILTIN = {"torch", "transformers", "tokenizers", "huggingface_hub", "__future__"} | set(sys.stdlib_module_names)


def plain_imports(folder: Path) -> set[str]:
    """Top-level packages the model files import outside try blocks (what transformers' `check_imports` reads)."""
    found = set()
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for s in t.body for n in ast.walk(s)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - BUILTIN


# sentence_transformers is imported only by the module that sentence-transformers itself loads (`SentenceTransformer(
# folder, trust_remote_code=True)`), so whoever runs that file has it.
REQUIRED = sorted(plain_imports(MODELS) - {"sentence_transformers"})


def dev_site_packages() -> Path:
    return next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "transformers").is_dir())


def venv_without(tmp_path: Path, hidden: set[str]) -> Path:
    """A virtualenv that has every package of this one except `hidden` and this package; its python."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    names = {name.lower().replace("-", "_") for name in hidden | {"sonar_llm_hf"}}
    for entry in dev_site_packages().iterdir():
        stem = entry.name.split("-")[0].removesuffix(".py").lower()
        if stem in names or entry.name.startswith(("__editable__", "__pycache__")) or (site / entry.name).exists():
            continue
        (site / entry.name).symlink_to(entry)
    return venv / "bin" / "python"


def run(python: Path, code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    return subprocess.run([str(python), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


def test_the_virtualenv_truly_lacks_what_it_hides(tmp_path):
    """The machinery the test below relies on: hidden packages cannot be imported, the others can."""
    import importlib.util

    assert importlib.util.find_spec("rouge_score") is not None  # (the dev extra's): installed here
    python = venv_without(tmp_path, {"rouge_score"})
    code = """
import importlib.util
print([importlib.util.find_spec(name) is None for name in ("rouge_score", "sonar_llm_hf", "transformers", "torch")])
"""
    result = run(python, code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == "[True, True, False, False]"


@pytest.mark.parametrize("package", REQUIRED)
def test_a_missing_requirement_is_named_by_transformers(tiny_sonar_llm_dir, tmp_path, package):
    python = venv_without(tmp_path, {package})
    code = f"""
from transformers import AutoModel
AutoModel.from_pretrained({str(tiny_sonar_llm_dir)!r}, trust_remote_code=True)
"""
    result = run(python, code, tmp_path)
    assert result.returncode != 0, f"the model loaded without {package}"
    assert "requires the following packages that were not found in your environment" in result.stderr
    assert f"pip install {package}" in result.stderr


def test_a_sonar_encoder_folder_needs_no_sentence_splitter(tmp_path):
    """The splitter serves SONAR-LLM prompts only: an encoder folder loads and encodes where sentencex is missing."""
    assert "sentencex" in REQUIRED
    spm = train_tiny_spm(tmp_path / "spm.model", vocab_size=100)
    torch.manual_seed(0)
    checkpoints = {}
    for kind in ("encoder", "decoder"):
        state = make_fs2_sonar_state_dict(kind, vocab=310, dim=16, layers=1, ffn=32)
        if kind == "decoder":
            state["final_proj.weight"] = state["decoder_frontend.embed.weight"]
        checkpoints[kind] = tmp_path / f"{kind}.pt"
        torch.save({"model": state}, checkpoints[kind])
    convert_sonar(tmp_path / "sonar", checkpoints["encoder"], checkpoints["decoder"], spm, num_heads=4)
    python = venv_without(tmp_path, {"sentencex"})
    code = f"""
from transformers import AutoModel
encoder = AutoModel.from_pretrained({str(tmp_path / "sonar" / "encoder")!r}, trust_remote_code=True)
print(tuple(encoder.encode(["The cat sat."], lang="eng_Latn").shape))
"""
    result = run(python, code, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[-2] == "(1, 16)"
