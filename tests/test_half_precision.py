"""bf16 and fp16: a model loaded with `dtype=` takes fp32 inputs at every entry point, generates, and trains with the
real Trainer (on CPU too, slowly); the collator emits the model's dtype; bf16 mixed precision (autocast) trains."""

import datasets
import pytest
import torch
from transformers import Trainer, TrainingArguments

from sonar_llm_hf import SonarLLMForCausalSentenceModeling
from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset

PROMPT = "Tom had a red ball. He went to the park."


@pytest.fixture(scope="module")
def documents(_tiny_sonar_llm):
    raw = datasets.Dataset.from_dict({"text": [story_to_text(s[:4]) for s in generate_corpus(4, seed=8)]})
    return prepare_dataset(raw, _tiny_sonar_llm, progress_bar=False)


def one_step(model, dataset, tmp_path, collator, **overrides):
    settings = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, optim="sgd",
                    learning_rate=0.1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                    dataloader_num_workers=0, disable_tqdm=True)  # fmt: skip
    settings.update(overrides)
    trainer = Trainer(model=model, args=TrainingArguments(**settings), train_dataset=dataset, data_collator=collator)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_half_precision_model_takes_fp32_inputs_generates_and_trains(tiny_sonar_llm_dir, documents, tmp_path, dtype):
    full = SonarLLMForCausalSentenceModeling.from_pretrained(tiny_sonar_llm_dir)
    model = SonarLLMForCausalSentenceModeling.from_pretrained(tiny_sonar_llm_dir, dtype=dtype)
    assert {p.dtype for p in model.parameters()} == {dtype}
    batch = SonarLLMDataCollator()([documents[i] for i in range(4)])  # fp32 embeddings
    assert batch["sentence_embeddings"].dtype == torch.float32
    # forward, with and without labels, and the backbone pass alone
    with torch.no_grad():
        out, reference = model(**batch), full(**batch)
        assert out.predicted_embeddings.dtype == dtype
        assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(reference.loss.item(), rel=0.05)
        assert model.predict_next(batch["sentence_embeddings"]).predicted_embeddings.dtype == dtype
        # the SONAR halves on their own, fed fp32
        memory = batch["sentence_embeddings"][:, 0]  # (4, d)
        assert len(model.sonar_decoder.decode(memory, num_beams=2, max_length=8)) == 4
        decoded = model.sonar_decoder(sentence_embeddings=memory, labels=batch["labels"][:, 1, :6].clamp(min=4))
        assert decoded.logits.dtype == dtype and torch.isfinite(decoded.loss)
        assert model.sonar_encoder.encode(["A cat sat."]).dtype == dtype
        token_embeddings = model.sonar_encoder.get_input_embeddings()(torch.tensor([[5, 6, 2]])).float()
        assert model.sonar_encoder(inputs_embeds=token_embeddings).pooler_output.dtype == dtype
    # generation from text and from fp32 embeddings
    settings = dict(max_new_sentences=1, num_beams=1, max_length=8)
    assert len(model.generate(PROMPT, **settings).sentences[0]) == 1
    generated = model.generate(batch["sentence_embeddings"][:2, :2], **settings)
    assert [len(s) for s in generated.sentences] == [1, 1] and generated.embeddings[0].dtype == dtype
    # a training step in the model's dtype, the collator emitting it
    collator = SonarLLMDataCollator.for_model(model)
    assert collator.dtype == dtype and collator([documents[0]])["sentence_embeddings"].dtype == dtype
    before = model.sentence_out_proj.weight.detach().clone()
    losses = one_step(model, documents, tmp_path, collator)
    assert len(losses) == 1 and losses[0] == pytest.approx(reference.loss.item(), rel=0.05)
    after = model.sentence_out_proj.weight
    assert after.dtype == dtype and torch.isfinite(after).all() and not torch.equal(after, before)


def test_bf16_mixed_precision_trains_fp32_weights(sonar_llm, documents, tmp_path):
    """`--precision bf16` (autocast over fp32 master weights), here on CPU."""
    before = sonar_llm.sentence_out_proj.weight.detach().clone()
    losses = one_step(sonar_llm, documents, tmp_path, SonarLLMDataCollator(), bf16=True)
    assert len(losses) == 1 and losses[0] > 0
    after = sonar_llm.sentence_out_proj.weight
    assert after.dtype == torch.float32 and torch.isfinite(after).all() and not torch.equal(after, before)


def test_collator_dtype_is_checked():
    assert SonarLLMDataCollator(dtype="bfloat16").dtype == torch.bfloat16
    assert SonarLLMDataCollator(dtype="torch.float16").dtype == torch.float16
    with pytest.raises(ValueError, match="Unknown dtype 'bf16'"):
        SonarLLMDataCollator(dtype="bf16")
    with pytest.raises(TypeError, match="floating-point torch dtype"):
        SonarLLMDataCollator(dtype=torch.int64)
