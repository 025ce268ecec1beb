"""`sonar-llm generate`: streams sentences, works offline on the default model, reports bad input clearly."""

import os
import subprocess
import sys

import pytest



def run_cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "sonar_llm_hf.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_generate_streams_sentences_from_a_folder(tiny_sonar_llm_dir, sonar_llm):
    prompt = "The cat sat on the mat. It was happy."
    result = run_cli("generate", prompt, "--model", str(tiny_sonar_llm_dir), "--num-beams", "1",
                     "--max-new-sentences", "2", "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = sonar_llm.generate(prompt, num_beams=1, max_new_sentences=2).sentences[0]
    assert result.stdout.splitlines() == expected


@pytest.mark.parametrize("pack_option", [[], ["--no-pack"]])
def test_beam_generation_is_the_plain_models_packed_or_not(tiny_sonar_llm_dir, sonar_llm, pack_option):
    """By default the command packs SONAR's weights (exact): its beam-search sentences are the plain model's."""
    prompt = "The cat sat on the mat. It was happy."
    result = run_cli("generate", prompt, "--model", str(tiny_sonar_llm_dir), "--max-new-sentences", "3", "--quiet",
                     *pack_option)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == sonar_llm.generate(prompt, max_new_sentences=3).sentences[0]


def test_several_prompts_are_labelled(tiny_sonar_llm_dir):
    result = run_cli("generate", "The cat sat.", "A dog ran.", "--model", str(tiny_sonar_llm_dir),
                     "--num-beams", "1", "--max-new-sentences", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "[0] Prompt: The cat sat." in result.stdout and "[1] Prompt: A dog ran." in result.stdout


def test_default_model_works_offline(tmp_path):
    result = run_cli("generate", "Tom had a red car.", "--max-new-sentences", "1", "--num-beams", "1",
                     env_extra={"SONAR_LLM_HF_CACHE": str(tmp_path)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Demo model" in result.stderr or "RANDOM" in result.stderr
    assert "Continuation:" in result.stdout


def test_bad_language_is_a_clear_error(tiny_sonar_llm_dir):
    result = run_cli("generate", "Hello.", "--model", str(tiny_sonar_llm_dir), "--lang", "english")
    assert result.returncode == 2
    assert "Unknown language code 'english'" in result.stderr and "eng_Latn" in result.stderr
