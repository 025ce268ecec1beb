"""Loading never hands back something that silently answers differently: damaged tokenizer files, mis-shaped weights,
an inferred preset, a missing demo model and positions past the backbone's are errors or warnings that say so."""

import json
import shutil
import warnings

import pytest
import torch
from transformers import AutoModel

import sonar_llm_hf.demo
from sonar_llm_hf import SonarLLMConfig


@pytest.fixture
def folder_copy(tiny_sonar_llm_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_sonar_llm_dir, copy)
    return copy


def test_damaged_tokenizer_files_are_an_error(folder_copy):
    path = folder_copy / "tokenizer.json"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # an interrupted copy
    with pytest.raises(ValueError, match=r"SONAR tokenizer saved in .* cannot be used: JSONDecodeError"):
        AutoModel.from_pretrained(folder_copy)


def test_tokenizer_files_without_pieces_are_an_error(folder_copy, sonar_tokenizer):
    document = json.loads((folder_copy / "tokenizer.json").read_text())
    document["model"]["vocab"] = {piece: i for piece, i in document["model"]["vocab"].items() if i < 4}
    document["model"]["merges"] = []
    (folder_copy / "tokenizer.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match="no SentencePiece pieces"):
        AutoModel.from_pretrained(folder_copy)
    # an explicit tokenizer replaces the damaged files
    model = AutoModel.from_pretrained(folder_copy, tokenizer=sonar_tokenizer)
    assert model.tokenizer is sonar_tokenizer


def test_a_folder_without_tokenizer_files_still_loads(folder_copy):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder_copy / name).unlink()
    model = AutoModel.from_pretrained(folder_copy)
    assert model.tokenizer is None
    with pytest.raises(ValueError, match="has no SONAR tokenizer"):
        model.generate("Hello there.")


def test_mis_shaped_weights_are_refused_even_when_told_to_ignore_them(folder_copy):
    config = json.loads((folder_copy / "config.json").read_text())
    config["llama_config"]["intermediate_size"] += 8  # every MLP weight of the backbone changes shape
    (folder_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"mismatched keys: \('model\.layers\.0\.mlp\.down_proj\.weight'"):
        AutoModel.from_pretrained(folder_copy, ignore_mismatched_sizes=True)


def test_from_preset_says_which_shapes_are_inferred():
    with pytest.warns(UserWarning, match="1.3B SONAR-LLM backbone shape is inferred from the paper"):
        config = SonarLLMConfig.from_preset("1.3B")
    assert config.llama_config.hidden_size == 2048
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SonarLLMConfig.from_preset("900M")


def test_demo_model_path_refuses_to_stand_in_a_random_model(tmp_path, monkeypatch):
    assert sonar_llm_hf.demo.default_model_path() == str(sonar_llm_hf.demo.PACKAGED_DEMO)
    monkeypatch.setattr(sonar_llm_hf.demo, "PACKAGED_DEMO", tmp_path / "demo_model")
    with pytest.raises(FileNotFoundError, match="demo model is missing.*--model PATH_OR_REPO"):
        sonar_llm_hf.demo.default_model_path(verbose=True)
    assert not list(tmp_path.iterdir())  # nothing built in its place


def test_sentences_past_the_backbone_positions_are_refused(sonar_llm):
    sonar_llm.config.llama_config.max_position_embeddings = 4
    embeddings = torch.randn(1, 5, sonar_llm.config.embed_dim)
    with pytest.raises(ValueError, match="would run 5 sentence positions but has 4"):
        sonar_llm(embeddings)
    sonar_llm(embeddings[:, :4])  # 4 fit
    with pytest.raises(ValueError, match="would run 6 sentence positions"):
        sonar_llm(embeddings[:, :1], position_ids=torch.tensor([[5]]))
    step = sonar_llm.predict_next(embeddings[:, :3], use_cache=True)
    with pytest.raises(ValueError, match="would run 5 sentence positions"):  # 3 cached + 2 new
        sonar_llm.predict_next(embeddings[:, 3:5], cache=step.cache, use_cache=True)
    sonar_llm.predict_next(embeddings[:, 3:4], cache=step.cache, use_cache=True)
    # generation refuses before decoding anything when a document could outgrow them
    prompt = ["The cat sat on the mat.", "It was happy."]
    with pytest.raises(ValueError, match="may grow to 5 sentences .*max_sentences=5.*4 positions"):
        sonar_llm.generate(prompt, max_sentences=5, num_beams=1, max_length=8)
    out = sonar_llm.generate(prompt, max_sentences=5, max_new_sentences=3, num_beams=1, max_length=8)
    assert len(out.sentences[0]) <= 3
