"""The README's whole workflow on the packaged demo model, with the real objects at each step: load -> generate ->
pipeline -> fine-tune with Trainer -> save_pretrained -> push_to_hub (only the Hub's network replaced) -> load the
saved and the uploaded files again -> the same generation as before saving."""

import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from huggingface_hub import HfApi, RepoUrl, constants
from transformers import AutoModel, Trainer, TrainingArguments, pipeline

from sonar_llm_hf import SonarLLMDataCollator, prepare_dataset
from sonar_llm_hf.demo import PACKAGED_DEMO
from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text

PROMPT = "Once upon a time, there was a little boy named Tom. Tom had a red ball."
OPTIONS = dict(max_new_sentences=2)


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The Hub without its network: `create_repo` answers, `create_commit` copies what it is sent into a folder
    (the "repo"), and README lookups find nothing (offline), as for a new repo."""
    repo = tmp_path / "uploaded"
    commits = []

    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        for operation in operations:
            target = repo / operation.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(operation.path_or_fileobj, target)  # the pushed folder is deleted after the call
        commits.append({"repo_id": repo_id, "files": sorted(op.path_in_repo for op in operations), **kwargs})

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: pytest.fail("unexpected upload_folder"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # ModelCard.load(repo_id) finds no card
    return repo, commits


def test_load_generate_pipeline_finetune_save_push_load(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_datasets")
    # 1. load and generate
    model = AutoModel.from_pretrained(PACKAGED_DEMO)
    before = model.generate(PROMPT, **OPTIONS)
    assert len(before.sentences[0]) == 2 and all(s.endswith(".") for s in before.sentences[0])

    # 2. the pipeline around the same model
    pipe = pipeline("sentence-continuation", model=model)
    assert pipe(PROMPT, **OPTIONS) == [{"generated_text": before.full_texts[0]}]

    # 3. fine-tune a few steps with the real Trainer (the recipe of examples/finetune.py)
    raw = datasets.Dataset.from_dict({"text": [story_to_text(s) for s in generate_corpus(12, seed=11)]})
    train_set = prepare_dataset(raw, model, max_sentences=6, progress_bar=False)
    sonar_before = {n: p.clone() for n, p in model.named_parameters() if n.startswith("sonar_")}
    backbone_before = model.sentence_out_proj.weight.clone()
    args = TrainingArguments(output_dir=str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=4,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             seed=0, disable_tqdm=True)  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=SonarLLMDataCollator())
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(0 < loss < 20 for loss in losses)
    assert not torch.equal(model.sentence_out_proj.weight, backbone_before)  # the backbone learned
    for name, value in sonar_before.items():  # SONAR stayed frozen
        assert torch.equal(dict(model.named_parameters())[name], value), name
    model.eval()
    tuned = model.generate(PROMPT, **OPTIONS)
    assert pipe(PROMPT, **OPTIONS) == [{"generated_text": tuned.full_texts[0]}]  # the pipeline holds the model

    # 4. save, and push to the (mocked) Hub
    saved = tmp_path / "saved"
    model.save_pretrained(saved)
    model.push_to_hub("me/sonar-llm-tuned", commit_message="fine-tuned demo")
    uploaded, commits = hub
    assert len(commits) == 1 and commits[0]["repo_id"] == "me/sonar-llm-tuned"
    assert {"config.json", "model.safetensors", "tokenizer.json", "pipeline_sonar_llm.py", "README.md"} <= set(
        commits[0]["files"])  # fmt: skip
    assert json.loads((uploaded / "config.json").read_text())["custom_pipelines"]

    # 5. load again (the saved folder, and the uploaded files as a Hub user gets them) and generate the same
    for folder in (saved, uploaded):
        again = AutoModel.from_pretrained(folder)
        out = again.generate(PROMPT, **OPTIONS)
        assert out.sentences == tuned.sentences, folder
        torch.testing.assert_close(out.embeddings[0], tuned.embeddings[0], rtol=0, atol=1e-6)
    remote = pipeline(model=str(uploaded), trust_remote_code=True)  # the task comes from config.json
    assert remote(PROMPT, **OPTIONS) == [{"generated_text": tuned.full_texts[0]}]
    assert Path(type(remote).__module__.replace(".", "/")).name == "pipeline_sonar_llm"
