"""`sonar-llm` failures: one line on stderr and a non-zero exit status, never a traceback (`cli_errors.py`).

Most cases run `main()` in this process with stderr captured; the closed pipe and the damaged folder run the real
command in a subprocess, as a shell would.
"""

import os
import shutil
import subprocess
import sys

import pytest

from sonar_llm_hf import cli
from sonar_llm_hf.cli_errors import EXIT_BUG, EXIT_STDOUT_CLOSED, TRACEBACK_VARIABLE, describe, run_command
from sonar_llm_hf.data_files import check_utf8
from sonar_llm_hf.evaluation import metrics as metrics_module


def run_main(capsys, *argv):
    """`sonar-llm argv...` in this process: (exit status, stdout, the stderr lines)."""
    status = cli.main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err.splitlines()


def error_line(lines):
    """The one `error:` line of a failed command (progress bars and the demo label may precede it)."""
    errors = [line for line in lines if line.startswith("sonar-llm") and "error:" in line]
    assert len(errors) == 1, lines
    assert not any("Traceback" in line for line in lines), lines
    return errors[0]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)


@pytest.fixture
def damaged_folder(tiny_sonar_llm_dir, tmp_path):
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_sonar_llm_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # an interrupted copy
    return folder


@pytest.mark.parametrize("kind", ["absolute", "relative"])
def test_a_missing_folder_is_named_as_such(capsys, tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "no-such-model") if kind == "absolute" else "./no-such-model"
    status, _, lines = run_main(capsys, "generate", "Hello.", "--model", missing)
    line = error_line(lines)
    assert status == 2 and f"the model folder {missing} does not exist" in line
    assert "repo id" not in line.lower() and "Repo id" not in line


def test_a_bare_name_offline_says_it_is_neither_a_folder_nor_reachable(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, _, lines = run_main(capsys, "generate", "Hello.", "--model", "my-model")
    line = error_line(lines)
    assert status == 2 and "'my-model' is not a folder here" in line and "HF_HUB_OFFLINE" in line


def test_a_git_lfs_pointer_is_named(capsys, tiny_sonar_llm_dir, tmp_path):
    folder = tmp_path / "pointer"
    shutil.copytree(tiny_sonar_llm_dir, folder)
    (folder / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 9\n")
    status, _, lines = run_main(capsys, "generate", "Hello.", "--model", str(folder))
    assert status == 2 and "Git LFS pointer" in error_line(lines) and "git lfs pull" in error_line(lines)


def test_a_damaged_weights_file_is_one_line_from_the_real_command(damaged_folder):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop(TRACEBACK_VARIABLE, None)
    result = subprocess.run([sys.executable, "-m", "sonar_llm_hf.cli", "generate", "Hello.", "--model",
                             str(damaged_folder)], capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    line = error_line(result.stderr.splitlines())
    assert f"the weights file {damaged_folder / 'model.safetensors'} is damaged" in line and "truncated" in line


def test_closed_stdout_stops_with_one_line_and_status_141(tiny_sonar_llm_dir):
    """`sonar-llm generate ... | head -1`: the reader goes away. Here it is gone before the first line is written,
    so that the test does not race the generation."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop(TRACEBACK_VARIABLE, None)
    process = subprocess.Popen([sys.executable, "-m", "sonar_llm_hf.cli", "generate", "The cat sat. It was happy.",
                                "--model", str(tiny_sonar_llm_dir), "--num-beams", "1", "--max-new-sentences", "2"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    stderr = stderr.decode()
    assert process.returncode == EXIT_STDOUT_CLOSED, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert last == "sonar-llm: stopped: the reader of its output went away (for example `| head`)"


@pytest.mark.parametrize("command", ["evaluate", "embed"])
def test_invalid_utf8_names_the_file_and_byte_offset(capsys, tmp_path, command):
    data = tmp_path / "stories.jsonl"
    good = b'{"text": "Tom had a red ball. He liked it."}\n'
    data.write_bytes(good + b'{"text": "Mia \xe9t\xe9 ran."}\n')  # Latin-1, not UTF-8
    out = tmp_path / "results" / "run1"
    if command == "evaluate":
        argv = ["evaluate", "--dataset", str(data), "--out", str(out), "--tasks", "ce"]
    else:
        argv = ["embed", str(data), "--output", str(out), "--device", "cpu", "--no-progress"]
    status, _, lines = run_main(capsys, *argv)
    line = error_line(lines)
    assert status == 2
    assert f"{data} is not valid UTF-8: byte offset {len(good) + 14} (line 2) holds b'\\xe9'" in line
    assert not (tmp_path / "results").exists()


def test_utf8_offsets_across_chunk_boundaries(tmp_path):
    """A character cut by a chunk boundary is fine; an error right after one is placed exactly."""
    path = tmp_path / "text.txt"
    path.write_bytes("é".encode() * 5 + b"\n" + b"ab\xff")
    for chunk_size in (1, 2, 3, 7, 1 << 20):
        with pytest.raises(ValueError, match=r"byte offset 13 \(line 2\) holds b'\\xff'"):
            check_utf8(path, chunk_size=chunk_size)
    path.write_bytes("é".encode() * 5 + b"\xc3")  # cut at the end of the file
    with pytest.raises(ValueError, match=r"byte offset 10 \(line 1\)"):
        check_utf8(path, chunk_size=4)
    path.write_bytes("é".encode() * 5)
    check_utf8(path, chunk_size=3)


def test_evaluate_leaves_no_empty_folder_after_a_late_failure(capsys, tmp_path):
    """The failure comes after the output folder was made (the dataset has no such column): it is removed, with the
    parents it created, while a folder that was there before stays."""
    data = tmp_path / "stories.jsonl"
    data.write_text('{"text": "Tom had a red ball. He liked it."}\n')
    out = tmp_path / "results" / "run1"
    status, _, lines = run_main(capsys, "evaluate", "--dataset", str(data), "--out", str(out), "--tasks", "ce",
                                "--text-column", "story")  # fmt: skip
    assert status == 2 and "no text column 'story'" in error_line(lines)
    assert not (tmp_path / "results").exists() and tmp_path.is_dir()


def test_a_missing_extra_is_named_with_its_pip_line(capsys, tmp_path, monkeypatch):
    data = tmp_path / "stories.jsonl"
    data.write_text('{"text": "Tom had a red ball. He liked it."}\n')
    monkeypatch.setitem(sys.modules, "nltk", None)  # `import nltk` now fails as if it were not installed
    metrics_module._scorers.cache_clear()
    try:
        status, _, lines = run_main(capsys, "evaluate", "--dataset", str(data), "--out", str(tmp_path / "o"))
    finally:
        metrics_module._scorers.cache_clear()
    assert status == 2 and 'pip install -e ".[eval]"' in error_line(lines) and "nltk" in error_line(lines)
    assert not (tmp_path / "o").exists()
    # the same for a bare import of an optional package anywhere in a command
    monkeypatch.setitem(sys.modules, "gradio", None)
    with pytest.raises(ImportError) as caught:
        import gradio  # noqa: F401
    line, status = describe(caught.value)
    assert status == 2 and "'gradio' is not installed" in line and 'pip install -e ".[demo]"' in line


def test_every_subcommand_gets_the_handling(capsys, monkeypatch):
    """`run_command` is the dispatch: a new subcommand's failure is one line too; a bug says it is one (status 1),
    and SONAR_LLM_TRACEBACK=1 adds the traceback."""

    class Args:
        model = None

    def bad_input(args):
        raise ValueError("`--foo` must be positive,\n got -1.")

    def bug(args):
        return 1 // 0

    assert run_command(bad_input, Args()) == 2
    assert capsys.readouterr().err == "sonar-llm: error: `--foo` must be positive, got -1.\n"
    assert run_command(bug, Args(), prog="sonar-llm embed") == EXIT_BUG
    err = capsys.readouterr().err
    assert err.startswith("sonar-llm embed: error: unexpected ZeroDivisionError: integer division or modulo by zero")
    assert err.count("\n") == 1 and f"{TRACEBACK_VARIABLE}=1" in err
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    assert run_command(bug, Args()) == EXIT_BUG
    assert "Traceback" in capsys.readouterr().err


def test_a_wrappers_cause_is_on_the_line():
    """Libraries wrap the informative error (datasets: "An error occurred while generating the dataset"): the line
    carries the cause, and such a library error counts as bad input (status 2), matched by its class name."""

    class DatasetGenerationError(Exception):
        pass

    try:
        try:
            b"ab\xff".decode()
        except UnicodeDecodeError as error:
            raise DatasetGenerationError("An error occurred while generating the dataset") from error
    except DatasetGenerationError as error:
        line, status = describe(error)
    assert status == 2
    assert line == ("An error occurred while generating the dataset (UnicodeDecodeError: 'utf-8' codec can't decode "
                    "byte 0xff in position 2: invalid start byte)")  # fmt: skip
