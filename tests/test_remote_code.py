"""Saved folders work as Hub remote code: a fresh interpreter that cannot import `sonar_llm_hf` loads and runs them."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoModel

import sonar_llm_hf

PACKAGE = Path(sonar_llm_hf.__file__).parent / "models"  # the Hub code: exactly this folder's files
# The sentence-transformers module travels with encoder folders only (written by the ST integration, not by
# save_pretrained) and may import sentence_transformers.
ST_MODULE_FILE = "sentence_transformers_sonar.py"
MODEL_FILES = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", ST_MODULE_FILE))

# Run in a child interpreter where importing the package fails, offline, from an unrelated directory.
BLOCK_PACKAGE = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "sonar_llm_hf" or name.startswith("sonar_llm_hf."):
            raise ImportError("sonar_llm_hf is deliberately unavailable here")
sys.meta_path.insert(0, _Block())
try:
    import sonar_llm_hf
    raise SystemExit("the package should not be importable")
except ImportError:
    pass
"""


def run_without_package(code: str, tmp_path: Path) -> dict:
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_PACKAGE + code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1])


def test_model_files_import_only_what_remote_code_allows():
    allowed = {"torch", "transformers", "tokenizers", "huggingface_hub", "sentencex", "__future__"}
    allowed |= set(sys.stdlib_module_names)
    for name in [*MODEL_FILES, ST_MODULE_FILE]:
        tree = ast.parse((PACKAGE / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            elif isinstance(node, ast.ImportFrom):
                assert node.module and "." not in node.module, f"{name}: nested relative import {node.module}"
                assert (PACKAGE / f"{node.module}.py").exists()
                continue
            else:
                continue
            extra = {"sentence_transformers"} if name == ST_MODULE_FILE else set()
            assert roots <= allowed | extra, f"{name} imports {roots - allowed - extra}"


def test_saved_folder_carries_code_and_auto_map(tiny_sonar_llm_dir):
    config = json.loads((tiny_sonar_llm_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_sonar_llm.SonarLLMConfig",
        "AutoModel": "modeling_sonar_llm.SonarLLMForCausalSentenceModeling",
    }
    for name in MODEL_FILES:
        assert (tiny_sonar_llm_dir / name).exists(), name


def test_trust_remote_code_without_the_package(tiny_sonar_llm_dir, sonar_llm, tmp_path):
    prompt = [["The cat sat on the mat.", "It was happy."]]
    code = f"""
import json, torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(tiny_sonar_llm_dir)!r}, trust_remote_code=True)
assert "sonar_llm_hf" not in type(model).__module__
embeddings = model.sonar_encoder.encode(["The cat sat on the mat.", "It was happy."])
out = model.generate({prompt!r}, num_beams=1, max_length=10, max_new_sentences=2)
print(json.dumps({{"module": type(model).__module__, "sentences": out.sentences,
                   "predicted": model(embeddings[None]).predicted_embeddings.tolist()}}))
"""
    remote = run_without_package(code, tmp_path)
    local = sonar_llm.generate(prompt, num_beams=1, max_length=10, max_new_sentences=2)
    assert remote["module"].startswith("transformers_modules")
    assert remote["sentences"] == local.sentences
    embeddings = sonar_llm.sonar_encoder.encode(prompt[0])
    expected = sonar_llm(embeddings[None]).predicted_embeddings
    torch.testing.assert_close(torch.tensor(remote["predicted"]), expected, rtol=0, atol=1e-6)


def test_saved_folder_carries_exactly_the_models_folder(tiny_sonar_llm_dir):
    assert sorted(p.name for p in tiny_sonar_llm_dir.glob("*.py")) == MODEL_FILES


def test_demo_model_saved_folder_runs_in_a_virtualenv_without_the_package(tmp_path):
    """The packaged demo folder holds weights and config only; a folder saved from it carries the code and runs
    with `trust_remote_code=True` in a fresh virtualenv that has torch and transformers but not this package."""
    from sonar_llm_hf.demo import PACKAGED_DEMO

    assert not list(PACKAGED_DEMO.glob("*.py"))
    assert "auto_map" not in json.loads((PACKAGED_DEMO / "config.json").read_text())
    model = AutoModel.from_pretrained(PACKAGED_DEMO)
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    prompt = "Once upon a time, there was a little boy named Tom. Tom had a red ball."
    local = model.generate(prompt, max_new_sentences=2)
    second = "Mia liked cats."
    local_batch = model.generate([prompt, second], max_new_sentences=2)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    # Our dependencies, but not the editable install of this package: a .pth file adds the directory without
    # processing the .pth files inside it (where the editable finder lives).
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "transformers").is_dir())
    (site / "dependencies.pth").write_text(str(deps) + "\n")
    code = f"""
import json, importlib.util
assert importlib.util.find_spec("sonar_llm_hf") is None, "the package leaked into the virtualenv"
from transformers import AutoModel
model = AutoModel.from_pretrained({str(saved)!r}, trust_remote_code=True)
out = model.generate({prompt!r}, max_new_sentences=2)
# the folder's config.json names the pipeline task: no task name, batched prompts
from transformers import pipeline
pipe = pipeline(model={str(saved)!r}, trust_remote_code=True)
piped = pipe([{prompt!r}, {second!r}], batch_size=2, max_new_sentences=2)
print(json.dumps({{"module": type(model).__module__, "sentences": out.sentences,
                   "pipeline": type(pipe).__module__, "piped": piped}}))
"""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["module"].startswith("transformers_modules")
    assert remote["sentences"] == local.sentences and local.sentences[0]
    assert remote["pipeline"].startswith("transformers_modules")
    assert remote["piped"] == [[{"generated_text": text}] for text in local_batch.full_texts]
