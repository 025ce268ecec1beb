"""What every converter and builder refuses before writing: bad weights (named), a folder holding anything it did not
write (named, left untouched), and a verification whose NaN would pass for zero."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_convert_sonar_llm import CHECKPOINT, CONFIG, sonar_dir  # noqa: F401 (fixture)

from sonar_llm_hf.conversion.checkpoints import ConversionError, check_state_dict
from sonar_llm_hf.conversion.output import MANIFEST, atomic_output_dir, foreign_files
from sonar_llm_hf.conversion.reference import ReferenceSonarLLM
from sonar_llm_hf.conversion.sonar import convert_sonar

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
sys.path.insert(0, str(ROOT / "conversion"))
sys.path.insert(0, str(ROOT / "examples" / "space"))
import convert_sonar_llm_to_hf as cli  # noqa: E402


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.tensor([1, 2]), r"not floating-point tensors: w \(torch\.int64\)"),
        (torch.tensor([True]), r"not floating-point tensors: w \(torch\.bool\)"),
        (torch.tensor([1.0, float("nan"), float("nan")]), r"NaN or inf values: w \(2 NaN, 0 inf of 3\)"),
        (torch.tensor([float("inf"), 0.0]), r"NaN or inf values: w \(0 NaN, 1 inf of 2\)"),
    ],
)
def test_bad_weights_are_refused_by_name(bad, message):
    with pytest.raises(ConversionError, match=message):
        check_state_dict({"ok": torch.zeros(2), "w": bad}, "checkpoint")


def test_a_checkpoint_with_an_inf_weight_writes_nothing(sonar_dir, tmp_path):
    from sonar_llm_hf.conversion.sonar_llm import read_source

    state, _ = read_source(CHECKPOINT)
    state["forward_proj.linear.bias"] = state["forward_proj.linear.bias"].clone()
    state["forward_proj.linear.bias"][3] = float("inf")
    path = tmp_path / "diverged.pt"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(ConversionError, match=r"forward_proj\.linear\.bias \(0 NaN, 1 inf"):
        cli.convert(path, sonar_dir, tmp_path / "out", config=CONFIG)
    assert not (tmp_path / "out").exists()


def test_a_nan_in_the_verification_is_not_swallowed(sonar_dir, tmp_path, monkeypatch):
    """`max(0.0, nan)` is 0.0: the worst difference must keep a NaN and fail."""
    real = ReferenceSonarLLM.forward
    monkeypatch.setattr(ReferenceSonarLLM, "forward", lambda self, e: real(self, e) * float("nan"))
    with pytest.raises(ConversionError, match="differ from the reference build .* by nan"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", config=CONFIG)
    assert not (tmp_path / "out").exists()


def test_sonar_output_keeps_a_users_files(tmp_path):
    a = REFERENCE / "a"
    out = tmp_path / "sonar"
    convert_sonar(out, a / "encoder.pt", a / "decoder.pt", REFERENCE / "spm.model", num_heads=4)
    assert (out / "encoder" / MANIFEST).is_file() and foreign_files(out / "encoder") == []
    convert_sonar(out, a / "encoder.pt", a / "decoder.pt", REFERENCE / "spm.model", num_heads=4)  # a re-run
    (out / "decoder" / "sentencepiece.bpe.model").write_bytes(b"the user's own")
    with pytest.raises(ConversionError, match=r"decoder holds 1 file\(s\) that no earlier conversion wrote.*"
                                              r"sentencepiece\.bpe\.model"):  # fmt: skip
        convert_sonar(out, a / "encoder.pt", a / "decoder.pt", REFERENCE / "spm.model", num_heads=4)
    assert (out / "decoder" / "sentencepiece.bpe.model").read_bytes() == b"the user's own"


def test_a_folder_without_manifest_is_never_replaced(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "config.json").write_text('{"model_type": "sonar_llm"}')  # looks like ours, but nobody recorded it
    with pytest.raises(ConversionError, match="config.json"), atomic_output_dir(target):
        pass
    with atomic_output_dir(tmp_path / "new") as staging:
        (staging / "a.txt").write_text("x")
    assert foreign_files(tmp_path / "new") == []


def run_builder(*args):
    return subprocess.run([sys.executable, str(ROOT / "examples" / "space" / "build_space.py"), *args],
                          capture_output=True, text=True)  # fmt: skip


def test_space_builder_rebuilds_its_own_folder_and_refuses_anything_else_in_one_line(tmp_path):
    space = tmp_path / "space"
    assert run_builder(str(space)).returncode == 0
    assert run_builder(str(space)).returncode == 0  # an earlier build is replaced
    (space / "notes.md").write_text("mine")
    result = run_builder(str(space))
    assert result.returncode == 2 and "notes.md" in result.stderr and "Traceback" not in result.stderr
    assert (space / "notes.md").read_text() == "mine"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    result = run_builder(str(a_file))
    assert result.returncode == 2 and "is not a folder" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_space_builder_in_a_read_only_folder_says_so(tmp_path):
    """sysfs refuses new folders even to root (CI runs as root, where a chmod-ed folder stays writable)."""
    result = run_builder("/sys/sonar_llm_hf_space")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Cannot write next to the output folder /sys/sonar_llm_hf_space" in result.stderr


def test_help_names_only_files_that_exist():
    for script in ("convert_sonar_to_hf.py", "convert_sonar_llm_to_hf.py", "convert_all.py", "publish.py"):
        text = subprocess.run([sys.executable, str(ROOT / "conversion" / script), "--help"], capture_output=True,
                              text=True, cwd=ROOT).stdout  # fmt: skip
        for path in re.findall(r"`((?:sonar_llm_hf|conversion|examples|benchmarks)/[\w/]+\.py)`", text):
            assert (ROOT / path).exists(), f"{script} --help names {path}"
