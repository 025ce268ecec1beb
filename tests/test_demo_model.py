"""The packaged demo model (README command 1) ends its stories by the paper's rule, with its saved settings.

The method stops a document when the decoded next sentence, re-encoded, has cosine >= 0.98 to enc("End of
sequence."); that only works if the miniature SONAR turns that embedding back into that very sentence, and if the
SONAR-LLM learnt to predict it. Prompts are held-out stories of the corpus the demo was trained on
(`examples/train_demo_world.py`, seed 0).
"""

import json

import pytest
import torch

from sonar_llm_hf import SonarLLMForCausalSentenceModeling
from sonar_llm_hf.demo import PACKAGED_DEMO
from sonar_llm_hf.demo.story_world import generate_corpus, split_corpus

pytestmark = pytest.mark.skipif(not (PACKAGED_DEMO / "config.json").exists(), reason="no packaged demo model")
DATA_FILES = {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "demo_world_results.json"}  # fmt: skip


@pytest.fixture(scope="module")
def demo():
    return SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval()


def test_demo_folder_holds_data_files_only():
    names = {path.name for path in PACKAGED_DEMO.iterdir()}
    assert names <= DATA_FILES, f"unexpected files in the demo folder: {sorted(names - DATA_FILES)}"
    assert "auto_map" not in json.loads((PACKAGED_DEMO / "config.json").read_text())
    generation = json.loads((PACKAGED_DEMO / "generation_config.json").read_text())
    assert generation.get("max_new_sentences") is None and generation["max_sentences"] == 32


def test_miniature_sonar_reconstructs_the_end_sentence(demo):
    end = demo.config.eos_sentence
    with torch.no_grad():
        embedding = demo.sonar_encoder.encode([end])
        assert demo.sonar_decoder.decode(embedding, num_beams=5, max_length=48) == [end]
        assert demo.sonar_decoder.decode(embedding, num_beams=1, max_length=48) == [end]


def test_demo_ends_held_out_stories_with_default_settings(demo):
    _, heldout = split_corpus(generate_corpus(20000, 0), 0.1, 0)
    stories = heldout[-6:]  # among the training script's end-rate prompts
    with torch.no_grad():
        out = demo.generate([story[:2] for story in stories])
    assert all(out.finished), [" ".join(s) for s, done in zip(out.sentences, out.finished) if not done]
    for sentences in out.sentences:
        assert 3 <= 2 + len(sentences) <= 16, sentences  # stories have 4 to 12 sentences
        assert demo.config.eos_sentence not in sentences


def test_miniature_sonar_rebuilds_the_worlds_common_sentences(demo):
    """Issue 25: the 200 sentences the training stories use most (before: 147 of them) round-trip exactly."""
    from collections import Counter

    train, _ = split_corpus(generate_corpus(20000, 0), 0.1, 0)
    common = [s for s, _ in Counter(s for story in train for s in story).most_common(200)]
    demo.sonar_encoder.tokenizer = demo.sonar_decoder.tokenizer = demo.tokenizer
    with torch.no_grad():
        decoded = demo.sonar_decoder.decode(demo.sonar_encoder.encode(common), num_beams=1, max_length=48,
                                            batch_size=200)  # fmt: skip
    assert [(a, b) for a, b in zip(common, decoded) if a != b] == []


def test_demo_holds_up_on_ordinary_prompts(demo):
    """Issue 25's targets with the saved settings: on at least 22 of the 24 ordinary prompts, 2-15 sentences, none
    said more than twice, ended by itself; never empty; never a special sentence kept."""
    from sonar_llm_hf.demo.ordinary_prompts import ORDINARY_PROMPTS, continuation_checks

    with torch.no_grad():
        out = demo.generate(ORDINARY_PROMPTS)
    checks = [continuation_checks(p, s, f) for p, s, f in zip(out.prompt_sentences, out.sentences, out.finished)]
    failing = {p: s for p, s, c in zip(ORDINARY_PROMPTS, out.sentences, checks) if not c["ok"]}
    assert len(failing) <= 2, failing
    assert all(out.sentences) and all(c["no_special"] for c in checks)
