"""`sonar-llm generate`: streams sentences, works offline on the default model, reports bad input clearly."""

import os
import subprocess
import sys

import pytest

from sonar_llm_hf import SonarLLMForCausalSentenceModeling
from sonar_llm_hf.demo import DEMO_LABEL, PACKAGED_DEMO
from sonar_llm_hf.testing.reference import plain_torch_products


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
    with plain_torch_products():
        expected = sonar_llm.generate(prompt, num_beams=1, max_new_sentences=2).sentences[0]
    assert result.stdout.splitlines() == expected


BEAM_PROMPT = "The cat sat on the mat. It was happy."


@pytest.fixture(scope="module")
def plain_beam_sentences(_tiny_sonar_llm):
    """The plain model's beam-search sentences, with torch's plain products (a baseline on oneDNN would share
    oneDNN's errors)."""
    with plain_torch_products():
        return _tiny_sonar_llm.generate(BEAM_PROMPT, max_new_sentences=3).sentences[0]


@pytest.mark.parametrize("pack_option", [[], ["--no-pack"]])
def test_beam_generation_is_the_plain_models_packed_or_not(tiny_sonar_llm_dir, plain_beam_sentences, pack_option):
    """By default the command packs SONAR's weights (exact): its beam-search sentences are the plain model's."""
    result = run_cli("generate", BEAM_PROMPT, "--model", str(tiny_sonar_llm_dir), "--max-new-sentences", "3",
                     "--quiet", *pack_option)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == plain_beam_sentences


def test_several_prompts_are_labelled(tiny_sonar_llm_dir):
    result = run_cli("generate", "The cat sat.", "A dog ran.", "--model", str(tiny_sonar_llm_dir),
                     "--num-beams", "1", "--max-new-sentences", "1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "[0] Prompt: The cat sat." in result.stdout and "[1] Prompt: A dog ran." in result.stdout


def test_default_model_is_the_packaged_demo_offline(tmp_path):
    """Without --model the command continues with the trained demo model shipped in the package (never a random
    fallback): the sentences are the demo's own."""
    prompt = "Tom had a red ball. He went to the park."
    result = run_cli("generate", prompt, "--max-new-sentences", "2", "--quiet",
                     env_extra={"SONAR_LLM_HF_CACHE": str(tmp_path)})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert DEMO_LABEL in result.stderr
    with plain_torch_products():
        expected = SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).generate(
            prompt, max_new_sentences=2
        )
    assert result.stdout.splitlines() == expected.sentences[0] and len(expected.sentences[0]) == 2


def test_bad_language_is_a_clear_error(tiny_sonar_llm_dir):
    result = run_cli("generate", "Hello.", "--model", str(tiny_sonar_llm_dir), "--lang", "english")
    assert result.returncode == 2
    assert "Unknown language code 'english'" in result.stderr and "eng_Latn" in result.stderr
