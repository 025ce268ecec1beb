"""Model cards of converted SONAR-LLM folders: metadata, licence, paper figures per size, usage, catalogue."""

import re
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard
from test_convert_sonar_llm import converted_dir, sonar_dir  # noqa: F401 (fixtures)

from sonar_llm_hf import SONAR_LLM_PRESETS, SonarLLMConfig, llama_preset
from sonar_llm_hf.conversion.model_card import (
    PAPER_RESULTS,
    RELEASED,
    build_model_card,
    paper_size,
    reference_parameter_count,
)

ROOT = Path(__file__).parents[1]


def card_for(size, config=None, repo_id="org/sonar-llm-x"):
    config = config or SonarLLMConfig.from_preset(size)
    return build_model_card(repo_id, size, config, source="`checkpoint_step_16480.pt`", dropped_parameters=10,
                            trainable=1_000, total=2_000)  # fmt: skip


def metadata(card: ModelCard) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


def test_converted_folder_card(converted_dir):
    output, _ = converted_dir
    card = ModelCard.load(output / "README.md")
    data = card.data
    assert data.license == "cc-by-nc-4.0"
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.base_model == "facebook/SONAR" and data.language == ["en"]
    assert {"sonar", "sonar-llm", "custom_code"} <= set(data.tags)
    # a tiny test backbone is no released size: no paper figures, no claimed training set
    assert data.eval_results is None and data.datasets is None
    assert "custom size" in card.text and "Not recorded in the checkpoint" in card.text
    assert "**Licence: CC-BY-NC-4.0 (non-commercial use only).**" in card.text
    assert "conversion of `checkpoint_step_7.pt`" in card.text
    for section in ("Usage", "Training data", "Results reported in the paper", "Intended use and limitations"):
        assert f"\n## {section}\n" in card.text
    # both ways of loading, with the folder's name as the repo id
    assert "import sonar_llm_hf" in card.text and 'AutoModel.from_pretrained("sonar-llm-tiny")' in card.text
    assert 'AutoModel.from_pretrained("sonar-llm-tiny", trust_remote_code=True)' in card.text
    # the table is filled from the config, not from full-size constants
    assert "hidden 32, 2 layers, 4 heads of 8 (4 key/value heads), FFN 64" in card.text
    assert "d 32, 2 + 2 layers" in card.text and "19,200 parameters" in card.text


def test_900m_card_carries_the_paper_figures():
    card = card_for("900M")
    assert {r.dataset_name for r in card.data.eval_results} == {"TinyStories"}
    results = {(r.metric_type, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert results == {
        ("rougeL", "ROUGE-L, short prefix"): 39.4, ("meteor", "METEOR, short prefix"): 32.9,
        ("rougeL", "ROUGE-L, long prefix"): 35.2, ("gpt-4o-grammar", "GPT-4o grammar (/10)"): 7.1,
        ("gpt-4o-creativity", "GPT-4o creativity (/10)"): 5.2, ("gpt-4o-consistency", "GPT-4o consistency (/10)"): 6.0,
        ("gpt-4o-plot", "GPT-4o plot (/10)"): 5.2,
    }  # fmt: skip
    meta = metadata(card)
    assert meta["datasets"] == ["roneneldan/TinyStories"]
    index = meta["model-index"][0]
    assert index["name"] == "sonar-llm-x"
    assert {r["task"]["type"] for r in index["results"]} == {"text-generation"}
    assert all(r["source"]["url"] == "https://arxiv.org/abs/2508.05305" for r in index["results"])
    assert RELEASED["900M"]["drive"] in card.text and "https://huggingface.co/raxtemur/sonar-llm-900m" in card.text
    assert "hidden 1536, 17 layers, 32 heads of 64" in card.text
    assert ModelCard(str(card)).data.eval_results[0].metric_value == 39.4  # the YAML round-trips


def test_13b_card_is_a_summarization_model():
    card = card_for("1.3B")
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("XSum", "rougeL"): 18.5, ("XSum", "meteor"): 14.5, ("CNN/DailyMail", "rougeL"): 15.5,
                       ("CNN/DailyMail", "meteor"): 10.0}  # fmt: skip
    assert card.data.datasets is None and "TinyTextbooks" in card.text and "TinyStories ([" not in card.text
    assert {r.task_type for r in card.data.eval_results} == {"summarization"}


@pytest.mark.parametrize("size", ["100M", "300M", "600M"])
def test_sizes_without_figures(size):
    card = card_for(size)
    assert card.data.eval_results is None and card.data.datasets == ["roneneldan/TinyStories"]
    assert "only in figures" in card.text and RELEASED[size]["drive"] in card.text


def test_size_from_parameter_count():
    # REFERENCE.md §2.2: the size labels count the full Llama with its 128,256-token embedding
    totals = {name: reference_parameter_count(llama_preset(name)) for name in SONAR_LLM_PRESETS}
    assert {k: round(v / 1e5) / 10 for k, v in totals.items()} == {
        "100M": 99.2, "300M": 299.1, "600M": 615.1, "900M": 892.3, "1.3B": 1336.5}  # fmt: skip
    # a Hub config that differs slightly from the inferred 1.3B preset is still the 1.3B release, and says why
    near = SonarLLMConfig(llama_config=llama_preset("1.3B", intermediate_size=8000))
    assert paper_size(near.llama_config) == "1.3B"
    card = card_for(None, config=near)
    assert "1.3B (by parameter count" in card.text and card.data.eval_results[0].dataset_name == "XSum"
    assert paper_size(llama_preset("1.3B", num_hidden_layers=30)) is None


def test_begin_sentence_is_documented():
    card = card_for("900M", config=SonarLLMConfig.from_preset("900M", add_begin=True))
    assert 'yes ("Begin of text." is prepended to prompts)' in card.text


def test_catalogue_matches_the_code():
    text = (ROOT / "CHECKPOINTS.md").read_text()
    for size, where in RELEASED.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| SONAR-LLM {size} "))
        for link in (where["drive"], where["hub"]):
            if link:
                assert link in row, (size, link)
    assert set(PAPER_RESULTS) <= set(RELEASED) and set(RELEASED) == set(SONAR_LLM_PRESETS)
    assert re.search(r"convert_all\.py originals/? --sonar sonar --output-root", text)


def test_card_shows_how_to_opt_into_the_sentence_controls():
    """Converted folders keep the reference loop; the card says how to turn the controls on (issue 25)."""
    card = card_for("900M")
    for text in ("repetition_threshold=0.98", 'repetition_action="avoid"', "min_new_sentences=2",
                 "--repetition-threshold 0.98", "ANY", "latent_temperature"):  # fmt: skip
        assert text in card.text, text
