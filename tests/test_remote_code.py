"""Saved folders work as Hub remote code: a fresh interpreter that cannot import `sonar_llm_hf` loads and runs them."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import torch

import sonar_llm_hf

PACKAGE = Path(sonar_llm_hf.__file__).parent
MODEL_FILES = [
    "configuration_sonar_llm.py", "configuration_sonar_text.py", "generation_sonar_llm.py", "generation_sonar_text.py",
    "modeling_sonar_llm.py", "modeling_sonar_text.py", "onednn_linear.py", "splitting_sonar_llm.py",
    "tokenization_sonar.py",
]  # fmt: skip

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
        [sys.executable, "-c", BLOCK_PACKAGE + code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(lines[-1])


def test_model_files_import_only_what_remote_code_allows():
    allowed = {"torch", "transformers", "tokenizers", "huggingface_hub", "__future__"} | set(sys.stdlib_module_names)
    for name in MODEL_FILES:
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
            assert roots <= allowed, f"{name} imports {roots - allowed}"


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



def test_packaged_demo_model_code_is_the_package_code():
    """The offline demo folder carries remote code: it must be today's modules, with everything they import."""
    import re

    demo = PACKAGE / "demo_model"
    copied = sorted(demo.glob("*.py"))
    assert copied
    for module in copied:
        assert module.read_text() == (PACKAGE / module.name).read_text(), f"re-copy {module.name} into demo_model/"
        for name in re.findall(r"^from \.(\w+) import", module.read_text(), flags=re.MULTILINE):
            assert (demo / f"{name}.py").is_file(), f"{module.name} imports .{name}, missing from demo_model/"
