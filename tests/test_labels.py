"""Labels mean the same wherever they come from: a target ends at its last label (not after as many tokens as it has
labels), each loss type's MSE means one thing whatever the collator, and batches of fixed label width let Trainer's
`evaluate` / `predict` join any number of batches."""

import datasets
import numpy as np
import pytest
import torch
from transformers import Trainer, TrainingArguments

from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text
from sonar_llm_hf.models.modeling_sonar_llm import append_eos_target
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset

SENTENCES = (2, 5, 3, 4, 6)  # per document, before the end sentence: batches of different (T, L)


@pytest.fixture(scope="module")
def five_documents(_tiny_sonar_llm):
    stories = generate_corpus(len(SENTENCES), seed=3)
    raw = datasets.Dataset.from_dict({"text": [story_to_text(s[:n]) for s, n in zip(stories, SENTENCES)]})
    return prepare_dataset(raw, _tiny_sonar_llm, progress_bar=False)


def _arguments(tmp_path, **overrides):
    settings = dict(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True,
                    dataloader_num_workers=0, disable_tqdm=True)  # fmt: skip
    return TrainingArguments(**{**settings, **overrides})


@pytest.mark.parametrize("for_model", [True, False])
def test_trainer_evaluate_and_predict_join_batches_of_different_lengths(sonar_llm, five_documents, tmp_path,
                                                                       for_model):  # fmt: skip
    """Three eval batches of 2, 2 and 1 documents, each with its own number of sentences and of tokens per sentence."""
    collator = SonarLLMDataCollator.for_model(sonar_llm) if for_model else SonarLLMDataCollator()
    batches = [collator([five_documents[i] for i in range(start, min(start + 2, 5))]) for start in (0, 2, 4)]
    assert len({b["labels"].shape[1] for b in batches}) == 3  # sentences per batch differ
    tokens_used = [int((b["labels"] != -100).sum(-1).max()) for b in batches]
    assert len(set(tokens_used)) > 1  # and so do the longest targets

    def counts(prediction):
        predicted, labels = prediction.predictions[0], prediction.label_ids
        present = (labels[:, 1:] != -100).any(-1)  # (N, T-1): the target sentences
        return {"present": int(present.sum()), "width": labels.shape[-1], "rows": predicted.shape[0]}

    trainer = Trainer(model=sonar_llm, args=_arguments(tmp_path), eval_dataset=five_documents,
                      data_collator=collator, compute_metrics=counts)  # fmt: skip
    metrics = trainer.evaluate()
    assert metrics["eval_rows"] == 5 and metrics["eval_present"] == sum(SENTENCES)  # every target sentence once
    assert metrics["eval_width"] == collator.label_width
    # Trainer reports each batch's own loss, weighted by its documents (2, 2, 1)
    with torch.no_grad():
        losses = [sonar_llm(**b).loss.item() for b in batches]
    assert metrics["eval_loss"] == pytest.approx(np.average(losses, weights=[2, 2, 1]), rel=1e-5)

    output = trainer.predict(five_documents)
    predicted = output.predictions[0]  # (5, T_max, d), padded with -100 past each batch's sentences
    width = max(SENTENCES) + 1
    assert predicted.shape == (5, width, sonar_llm.config.embed_dim)
    assert output.label_ids.shape == (5, width, collator.label_width)
    for start, batch in zip((0, 2, 4), batches):
        with torch.no_grad():
            expected = sonar_llm(**batch).predicted_embeddings
        rows, length = expected.shape[:2]
        np.testing.assert_allclose(predicted[start : start + rows, :length], expected.numpy(), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(output.label_ids[start : start + rows, :length], batch["labels"].numpy())


def test_a_target_ends_at_its_last_label(sonar_llm):
    """An interior -100 leaves one token out of the loss; the target still ends with its `</s>`. Counting labels
    instead of finding the last one cut the target before its `</s>`."""
    ids = sonar_llm.tokenizer.convert_tokens_to_ids(["eng_Latn"]) + [10, 11, 12, 2]  # [lang] 3 pieces </s>
    labels = torch.full((1, 2, len(ids)), -100)
    labels[0, 1] = torch.tensor(ids)
    labels[0, 1, 2] = -100  # the second piece is not a target
    embeddings = torch.randn(1, 2, sonar_llm.config.embed_dim, generator=torch.Generator().manual_seed(0))
    batch = {"sentence_embeddings": embeddings, "attention_mask": torch.ones(1, 2, dtype=torch.long), "labels": labels}
    output = sonar_llm(**batch)
    assert int(output.num_target_tokens) == 4
    # the teacher-forced decoder by hand: input [</s>, lang, p1, <pad>, p3] (padding where the label is -100, as
    # transformers' shift_tokens_right does), targets [lang, p1, -, p3, </s>]
    decoder = sonar_llm.sonar_decoder
    targets = batch["labels"][0, 1]
    inputs = torch.cat([torch.tensor([decoder.config.decoder_start_token_id]), targets[:-1]])
    inputs = inputs.masked_fill(inputs == -100, decoder.config.pad_token_id)
    with torch.no_grad():
        logits = decoder(sentence_embeddings=output.predicted_embeddings[0, :1], decoder_input_ids=inputs[None]).logits
    expected = torch.nn.functional.cross_entropy(logits[0], targets, ignore_index=-100)
    torch.testing.assert_close(output.loss, expected, rtol=1e-5, atol=1e-6)


def test_the_duplicated_end_follows_the_last_label():
    labels = torch.tensor([[5, -100, 7, 2, -100], [5, 6, 2, -100, -100], [5, 6, 2, 2, -100]])
    assert append_eos_target(labels, eos_id=2).tolist() == [
        [5, -100, 7, 2, 2, -100], [5, 6, 2, 2, -100, -100], [5, 6, 2, 2, -100, -100]]  # fmt: skip


def test_mse_under_trainer_needs_one_label_per_sentence(sonar_llm, five_documents):
    """ "mse" is the mean over sentences whatever the labels; Trainer's count of token labels would divide it by the
    number of tokens instead, so that layout is refused under Trainer, naming the collator that fits."""
    sonar_llm.config.loss_type = "mse"
    tokens = SonarLLMDataCollator()([five_documents[i] for i in range(2)])
    sentences = SonarLLMDataCollator.for_model(sonar_llm)([five_documents[i] for i in range(2)])
    with torch.no_grad():
        plain = sonar_llm(**tokens).loss
        torch.testing.assert_close(sonar_llm(**sentences).loss, plain)
        count = int((sentences["labels"] != -100).sum())
        torch.testing.assert_close(sonar_llm(**sentences, num_items_in_batch=count).loss, plain)
        with pytest.raises(ValueError, match="scores each of its 7 target sentences once.*for_model"):
            sonar_llm(**tokens, num_items_in_batch=int((tokens["labels"] != -100).sum()))
