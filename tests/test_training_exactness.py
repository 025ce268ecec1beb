"""Under the real Trainer, every loss type trains on the model's own mean over its targets, and gradient accumulation
equals one large batch; labels Trainer would count wrong are refused; `loss_type` is checked wherever it is set.

Trainer divides by `num_items_in_batch`, its count of `labels != -100` (transformers 5.24 `_get_num_items_in_batch`).
The documents below differ in sentences and in tokens, so a loss averaged per micro-batch, or divided by a count that
includes a non-target, gives a different step."""

import copy
import importlib.util
import itertools
import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModel, Trainer, TrainingArguments

from sonar_llm_hf import SonarLLMConfig
from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset

ROOT = Path(__file__).parents[1]
SENTENCES = (2, 7, 3, 4)  # per document, before the end sentence


@pytest.fixture(scope="module")
def four_documents(_tiny_sonar_llm):
    stories = generate_corpus(len(SENTENCES), seed=21)
    raw = datasets.Dataset.from_dict({"text": [story_to_text(s[:n]) for s, n in zip(stories, SENTENCES)]})
    prepared = prepare_dataset(raw, _tiny_sonar_llm, progress_bar=False)
    # every way of splitting them into two micro-batches of two gives halves with different target counts
    sentences = [n - 1 for n in prepared["num_sentences"]]
    tokens = [sum(len(ids) for ids in labels[1:]) for labels in prepared["labels"]]
    for pair in itertools.combinations(range(4), 2):
        rest = [i for i in range(4) if i not in pair]
        assert sum(sentences[i] for i in pair) != sum(sentences[i] for i in rest)
        assert sum(tokens[i] for i in pair) != sum(tokens[i] for i in rest)
    return prepared


def train_one_step(model, dataset, tmp_path, collator=None, **overrides):
    """One SGD step with learning rate 1: equal weights afterwards <=> equal gradients."""
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, optim="sgd",
                    learning_rate=1.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                    data_seed=0, dataloader_num_workers=0, disable_tqdm=True)  # fmt: skip
    settings.update(overrides)
    trainer = Trainer(model=model, args=TrainingArguments(**settings), train_dataset=dataset,
                      data_collator=collator or SonarLLMDataCollator())  # fmt: skip
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def own_mean(model, dataset, collator=None):
    """The model's loss on all documents at once, outside Trainer (no `num_items_in_batch`)."""
    batch = (collator or SonarLLMDataCollator())([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return model(**batch).loss.item()


@pytest.mark.parametrize("loss_type", ["ce", "mse", "ce+mse", "ce, duplicated </s>"])
def test_every_loss_type_is_exact_under_accumulation(sonar_llm, four_documents, tmp_path, loss_type):
    """1 x 4 and 2 x 2 take the same step, and Trainer's logged loss is the model's own mean over the batch."""
    collator = SonarLLMDataCollator()
    if loss_type == "ce, duplicated </s>":  # the reference's extra `</s>` target: the collator writes it
        loss_type = "ce"
        sonar_llm.config.duplicate_final_eos_target = True
        collator = SonarLLMDataCollator.for_model(sonar_llm)
        assert collator.duplicate_eos_id == sonar_llm.config.decoder_config.eos_token_id
    sonar_llm.config.loss_type = loss_type
    sonar_llm.config.mse_weight = 0.5
    if loss_type == "mse":  # Trainer counts labels: one per target sentence, the items of "mse"
        collator = SonarLLMDataCollator.for_model(sonar_llm)
    expected = own_mean(sonar_llm, four_documents)  # plain labels: the model appends any extra `</s>` itself
    assert own_mean(sonar_llm, four_documents, collator) == pytest.approx(expected, rel=1e-6)
    big, small = sonar_llm, copy.deepcopy(sonar_llm)
    big_losses = train_one_step(big, four_documents, tmp_path / "big", collator)
    small_losses = train_one_step(small, four_documents, tmp_path / "small", collator, per_device_train_batch_size=2,
                                  gradient_accumulation_steps=2)  # fmt: skip
    assert big_losses == pytest.approx([expected], rel=1e-5)
    assert small_losses == pytest.approx([expected], rel=1e-5)
    moved = 0
    for (name, a), (_, b) in zip(big.named_parameters(), small.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved += int(a.requires_grad)
    assert moved > 0


class NaturalLabels(SonarLLMDataCollator):
    """Labels in the plain documented form: `labels[:, t]` = the tokens of sentence t for every t, 0 included."""

    def __call__(self, features):
        batch = super().__call__(features)
        for b, feature in enumerate(features):
            first = feature["labels"][0]
            batch["labels"][b, 0, : len(first)] = torch.as_tensor(first)
        return batch


def test_labels_trainer_would_count_wrong_are_refused(sonar_llm, four_documents, tmp_path):
    # outside Trainer any layout works: sentence 0's labels are never targets
    assert own_mean(sonar_llm, four_documents, NaturalLabels()) == pytest.approx(own_mean(sonar_llm, four_documents))
    # under Trainer they would inflate its count (a silently smaller learning rate): refused, with the numbers
    first = sum(len(labels[0]) for labels in four_documents["labels"])
    with pytest.raises(ValueError, match=rf"labels\[:, 0\] holds {first} \(sentence 0 is never a target.*"
                                         r"SonarLLMDataCollator"):  # fmt: skip
        train_one_step(sonar_llm, four_documents, tmp_path / "natural", NaturalLabels())
    # labels at padded sentences, passed by hand with a count
    batch = SonarLLMDataCollator()([four_documents[i] for i in range(4)])
    batch["attention_mask"][0, 1] = 0
    with pytest.raises(ValueError, match="sit at padded sentences"):
        sonar_llm(**batch, num_items_in_batch=100)
    # the extra `</s>` targets of duplicate_final_eos_target exist only if the collator writes them
    sonar_llm.config.duplicate_final_eos_target = True
    with pytest.raises(ValueError, match=r"adds \d+ `</s>` targets.*SonarLLMDataCollator.for_model"):
        train_one_step(sonar_llm, four_documents, tmp_path / "duplicated")


def test_loss_type_is_checked_wherever_it_is_set(sonar_llm, tiny_sonar_llm_dir, four_documents, tmp_path):
    for wrong in ("CE", "ce_mse", "mse ", "l2"):
        with pytest.raises(ValueError, match="`loss_type` must be exactly 'ce', 'mse' or 'ce\\+mse'"):
            SonarLLMConfig(loss_type=wrong)
        with pytest.raises(ValueError, match=f"got {wrong!r}"):
            sonar_llm.config.loss_type = wrong
    with pytest.raises(ValueError, match="did you mean 'ce\\+mse'"):
        AutoModel.from_pretrained(tiny_sonar_llm_dir, loss_type="ce_mse")
    assert sonar_llm.config.loss_type == "ce"  # the refused assignments changed nothing
    # a config changed behind the check (`object.__setattr__`) is caught at the loss
    object.__setattr__(sonar_llm.config, "loss_type", "CE")
    batch = SonarLLMDataCollator()([four_documents[i] for i in range(2)])
    with pytest.raises(ValueError, match="got 'CE'"):
        sonar_llm(**batch)
    # the fine-tuning CLI refuses it before loading anything
    spec = importlib.util.spec_from_file_location("example_finetune_loss_type", ROOT / "examples" / "finetune.py")
    finetune = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = finetune
    spec.loader.exec_module(finetune)
    with pytest.raises(SystemExit):
        finetune.main(["--model_name_or_path", str(tiny_sonar_llm_dir), "--dataset", "none.jsonl", "--output_dir",
                       str(tmp_path), "--loss_type", "CE"])  # fmt: skip


def test_mse_collated_for_the_model_is_the_plain_mean_over_sentences(sonar_llm, four_documents, tmp_path):
    """`for_model` on an MSE model counts target sentences: Trainer then trains on the Large Concept Model's plain
    mean squared error over predicted sentences, and 2 x 2 still equals 1 x 4."""
    sonar_llm.config.loss_type = "mse"
    collator = SonarLLMDataCollator.for_model(sonar_llm)
    assert collator.one_label_per_sentence
    batch = collator([four_documents[i] for i in range(len(four_documents))])
    assert batch["labels"].shape[-1] == 1
    assert int((batch["labels"] != -100).sum()) == sum(n - 1 for n in four_documents["num_sentences"])
    with torch.no_grad():
        predicted = sonar_llm(batch["sentence_embeddings"], batch["attention_mask"]).predicted_embeddings
    present = batch["attention_mask"][:, 1:].bool()
    plain = torch.nn.functional.mse_loss(predicted[:, :-1][present], batch["sentence_embeddings"][:, 1:][present])
    big, small = sonar_llm, copy.deepcopy(sonar_llm)
    assert train_one_step(big, four_documents, tmp_path / "big", collator) == pytest.approx([plain.item()], rel=1e-5)
    small_losses = train_one_step(small, four_documents, tmp_path / "small", collator, per_device_train_batch_size=2,
                                  gradient_accumulation_steps=2)  # fmt: skip
    assert small_losses == pytest.approx([plain.item()], rel=1e-5)
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
