"""SonarLLMForCausalSentenceModeling: forward, loss parity with the reference wrapper, training hooks, save/load."""

import pytest
import torch
from conftest import SONAR_DIM, tiny_llm_config
from transformers import AutoConfig, AutoModel, LlamaConfig, LlamaForCausalLM

from sonar_llm_hf import SonarLLMConfig, SonarLLMForCausalSentenceModeling
from sonar_llm_hf.models.modeling_sonar_llm import chunked_token_cross_entropy
from sonar_llm_hf.models.tokenization_sonar import encode_target
from sonar_llm_hf.testing.reference import reference_backbone, reference_loss

DOCUMENTS = [
    ["The cat sat on the mat.", "It was happy.", "End of sequence."],
    ["A dog ran in the park.", "The sun was warm.", "The dog found a ball.", "He played all day.", "End of sequence."],
]


def batch_for(model, documents=DOCUMENTS, lang="eng_Latn"):
    """Zero-padded embeddings, mask and -100-padded labels, as the data collator builds them."""
    tokenizer = model.tokenizer
    width = max(len(d) for d in documents)
    embeddings = torch.zeros(len(documents), width, SONAR_DIM)
    mask = torch.zeros(len(documents), width, dtype=torch.long)
    rows = [encode_target(tokenizer, doc, lang) for doc in documents]
    length = max(len(r) for doc in rows for r in doc)
    labels = torch.full((len(documents), width, length), -100, dtype=torch.long)
    for b, doc in enumerate(documents):
        embeddings[b, : len(doc)] = model.sonar_encoder.encode(doc, lang=lang)
        mask[b, : len(doc)] = 1
        for t, ids in enumerate(rows[b]):
            labels[b, t, : len(ids)] = torch.tensor(ids)
    labels[:, 0] = -100
    return embeddings, mask, labels


def test_predicted_embeddings_equal_reference_llama_wrapper(sonar_llm):
    """The reference runs `LlamaForCausalLM` (with its dead vocabulary) and reads `hidden_states[-1]`."""
    embeddings, mask, _ = batch_for(sonar_llm)
    ours = sonar_llm(embeddings, mask).predicted_embeddings
    reference_config = LlamaConfig(**{**sonar_llm.config.llama_config.to_dict(), "vocab_size": 50})
    reference_llama = LlamaForCausalLM(reference_config).eval()
    missing, unexpected = reference_llama.model.load_state_dict(sonar_llm.model.state_dict(), strict=False)
    assert missing == ["embed_tokens.weight"] and unexpected == []
    hidden = reference_llama(
        inputs_embeds=sonar_llm.sentence_in_proj(embeddings), output_hidden_states=True
    ).hidden_states[-1]
    reference = sonar_llm.sentence_out_proj(hidden)
    # Right padding with a causal mask: real positions never see padding, so they match without a mask too.
    real = mask.bool()
    torch.testing.assert_close(ours[real], reference[real], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[real], reference_backbone(sonar_llm, embeddings)[real], rtol=0, atol=1e-6)


def test_loss_equals_reference_wrapper_with_duplicated_eos(sonar_llm):
    sonar_llm.config.duplicate_final_eos_target = True
    embeddings, mask, labels = batch_for(sonar_llm)
    ours = sonar_llm(embeddings, mask, labels=labels).loss
    expected = reference_loss(sonar_llm, embeddings, DOCUMENTS, duplicate_final_eos=True)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_default_loss_drops_the_duplicated_eos_target(sonar_llm):
    """The reference's extra `</s>` -> `</s>` target is a quirk; by default we train on `[lang] pieces </s>` only."""
    embeddings, mask, labels = batch_for(sonar_llm)
    output = sonar_llm(embeddings, mask, labels=labels)
    without = reference_loss(sonar_llm, embeddings, DOCUMENTS, duplicate_final_eos=False)
    with_quirk = reference_loss(sonar_llm, embeddings, DOCUMENTS, duplicate_final_eos=True)
    torch.testing.assert_close(output.loss, without, rtol=0, atol=1e-5)
    assert abs(with_quirk.item() - without.item()) > 1e-3
    pairs = sum(len(d) - 1 for d in DOCUMENTS)
    assert output.num_target_tokens.item() == (labels[:, 1:] != -100).sum().item()
    sonar_llm.config.duplicate_final_eos_target = True
    assert (
        sonar_llm(embeddings, mask, labels=labels).num_target_tokens.item() == output.num_target_tokens.item() + pairs
    )


def test_chunked_cross_entropy_equals_full_logits():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)  # a trainable head too (train_sonar_decoder)
    labels = torch.randint(0, 50, (3, 7))
    labels[1, 4:] = -100
    total, count = chunked_token_cross_entropy(hidden, weight, labels, chunk_size=4)
    full = torch.nn.functional.cross_entropy((hidden @ weight.T).reshape(-1, 50), labels.reshape(-1), reduction="sum")
    torch.testing.assert_close(total, full)
    assert count.item() == (labels != -100).sum().item()
    # the gradients taken in the forward pass, scaled by the upstream gradient in backward
    grads_chunked = torch.autograd.grad(total * 0.5, (hidden, weight))
    grads_full = torch.autograd.grad(full * 0.5, (hidden, weight))
    for chunked, expected in zip(grads_chunked, grads_full):
        torch.testing.assert_close(chunked, expected)
    # without autograd: the loss alone
    with torch.no_grad():
        torch.testing.assert_close(chunked_token_cross_entropy(hidden, weight, labels, chunk_size=4)[0], full)


def test_num_items_in_batch_sets_the_denominator(sonar_llm):
    embeddings, mask, labels = batch_for(sonar_llm)
    plain = sonar_llm(embeddings, mask, labels=labels)
    scaled = sonar_llm(embeddings, mask, labels=labels, num_items_in_batch=torch.tensor(1000))
    torch.testing.assert_close(scaled.loss * 1000, plain.loss * plain.num_target_tokens, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("loss_type", ["mse", "ce+mse"])
def test_mse_losses(sonar_llm, loss_type):
    """ "mse" is the plain mean over predicted sentences and in "ce+mse" each sentence's MSE counts once per target
    token of it (the one count Trainer gives: tests/test_training_exactness.py), whatever collator laid the labels
    out: every token of each sentence, or one label per sentence."""
    embeddings, mask, labels = batch_for(sonar_llm)
    ce = sonar_llm(embeddings, mask, labels=labels).loss
    sonar_llm.config.loss_type = loss_type
    output = sonar_llm(embeddings, mask, labels=labels)
    present = mask[:, 1:].bool()
    per_sentence = (output.predicted_embeddings[:, :-1][present] - embeddings[:, 1:][present]).pow(2).mean(-1)
    tokens = (labels[:, 1:][present] != -100).sum(-1)
    assert len(set(tokens.tolist())) > 1  # sentences of different lengths: the weighting matters
    weights = tokens if loss_type == "ce+mse" else torch.ones_like(tokens)
    mse = (per_sentence * weights).sum() / weights.sum()
    torch.testing.assert_close(output.mse_loss, mse)
    expected = mse if loss_type == "mse" else ce + mse
    torch.testing.assert_close(output.loss, expected, rtol=1e-5, atol=1e-6)
    one_each = torch.where(present.unsqueeze(-1), 4, -100)[..., :1].expand(-1, -1, 1)  # (B, T-1, 1)
    one_each = torch.cat([torch.full_like(one_each[:, :1], -100), one_each], dim=1)
    if loss_type == "mse":
        plain = torch.nn.functional.mse_loss(output.predicted_embeddings[:, :-1][present], embeddings[:, 1:][present])
        torch.testing.assert_close(output.loss, plain)
        torch.testing.assert_close(sonar_llm(embeddings, mask, labels=one_each).loss, plain)
    else:  # one label per sentence would cut every target to its first token
        with pytest.raises(ValueError, match="one token per sentence.*for_model"):
            sonar_llm(embeddings, mask, labels=one_each)


def test_gradients_reach_the_backbone_not_sonar(sonar_llm):
    sonar_llm.train()
    assert not sonar_llm.sonar_decoder.training and not sonar_llm.sonar_encoder.training
    embeddings, mask, labels = batch_for(sonar_llm)
    sonar_llm(embeddings, mask, labels=labels).loss.backward()
    assert sonar_llm.sentence_in_proj.weight.grad.abs().sum() > 0
    assert sonar_llm.model.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in sonar_llm.sonar_decoder.parameters())
    assert all(not p.requires_grad for p in sonar_llm.sonar_encoder.parameters())


def test_activation_checkpointing_gives_the_same_gradients(sonar_llm):
    embeddings, mask, labels = batch_for(sonar_llm)
    sonar_llm.train()
    sonar_llm(embeddings, mask, labels=labels).loss.backward()
    expected = sonar_llm.model.layers[1].mlp.up_proj.weight.grad.clone()
    sonar_llm.zero_grad()
    sonar_llm.activation_checkpointing_enable()
    assert sonar_llm.model.layers[0].gradient_checkpointing
    sonar_llm(embeddings, mask, labels=labels).loss.backward()
    torch.testing.assert_close(sonar_llm.model.layers[1].mlp.up_proj.weight.grad, expected)


def test_save_load_round_trip_is_exact(sonar_llm, tiny_sonar_llm_dir):
    loaded = AutoModel.from_pretrained(tiny_sonar_llm_dir)
    assert type(loaded) is SonarLLMForCausalSentenceModeling
    assert isinstance(AutoConfig.from_pretrained(tiny_sonar_llm_dir), SonarLLMConfig)
    for (name, a), (_, b) in zip(sonar_llm.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.sonar_decoder.lm_head.weight is loaded.sonar_decoder.decoder.embed_tokens.weight
    assert loaded.tokenizer is not None  # found beside the weights
    embeddings, mask, _ = batch_for(sonar_llm)
    assert torch.equal(sonar_llm(embeddings, mask).predicted_embeddings, loaded(embeddings, mask).predicted_embeddings)


def test_missing_sonar_weight_is_an_error_not_random_init(sonar_llm, tmp_path):
    from safetensors.torch import load_file, save_file

    sonar_llm.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["sonar_encoder.encoder.layers.0.fc1.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="sonar_encoder.encoder.layers.0.fc1.weight"):
        SonarLLMForCausalSentenceModeling.from_pretrained(tmp_path)


def test_no_dead_token_vocabulary(sonar_llm):
    assert sonar_llm.model.embed_tokens is None
    assert not any("embed_tokens" in k and k.startswith("model.") for k in sonar_llm.state_dict())
    assert sonar_llm.get_input_embeddings() is sonar_llm.sentence_in_proj


def test_full_size_presets_on_meta_device():
    expected_transformer = {"100M": 33.56e6, "300M": 167.8e6, "600M": 450.9e6, "900M": 695.3e6}
    for name, size in expected_transformer.items():
        with torch.device("meta"):
            model = SonarLLMForCausalSentenceModeling(SonarLLMConfig.from_preset(name))
        backbone = sum(p.numel() for p in model.model.parameters())
        assert abs(backbone - size) / size < 0.002, (name, backbone)
        assert sum(p.numel() for p in model.sonar_encoder.parameters()) == 766_091_264
        # the decoder's LM head is tied to its embedding
        assert sum(p.numel() for p in model.sonar_decoder.parameters()) == 866_902_016


@pytest.mark.parametrize(
    "make_inputs, message",
    [
        (lambda e, m, y: (e[0], m, None), "shape"),
        (lambda e, m, y: (e[..., :8], m, None), "width"),
        (lambda e, m, y: (e.long(), m, None), "floating"),
        (lambda e, m, y: (e, m[:, :2], None), "attention_mask"),
        (lambda e, m, y: (e, m, y[:, :2]), "labels"),
        (lambda e, m, y: (e, m, y.float()), "integer"),
        (lambda e, m, y: (e.masked_fill(torch.ones_like(e, dtype=torch.bool), float("nan")), m, None), "NaN"),
    ],
)
def test_bad_inputs_are_refused(sonar_llm, make_inputs, message):
    embeddings, mask, labels = batch_for(sonar_llm)
    e, m, y = make_inputs(embeddings, mask, labels)
    with pytest.raises((ValueError, TypeError), match=message):
        sonar_llm(e, m, labels=y)


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="embed_dim"):
        SonarLLMConfig(embed_dim=512)
    with pytest.raises(ValueError, match="loss_type"):
        SonarLLMConfig(loss_type="l1")
    with pytest.raises(ValueError, match="preset"):
        SonarLLMConfig.from_preset("7B")
    config = SonarLLMConfig.from_preset("600M")
    assert (config.llama_config.num_attention_heads, config.llama_config.head_dim) == (26, 64)
    assert config.llama_config.rope_parameters["rope_type"] == "llama3"


def test_config_round_trip(tmp_path, sonar_tokenizer):
    config = tiny_llm_config(sonar_tokenizer, add_begin=True, loss_type="ce+mse")
    config.save_pretrained(tmp_path)
    loaded = SonarLLMConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.llama_config.hidden_size == 32 and loaded.encoder_config.d_model == SONAR_DIM
