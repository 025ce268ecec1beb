"""Ordinary transformers moves on our models (issue 11, items 2, 6, 10): a partial `GenerationConfig` merges as in
transformers, `return_dict=False` / `output_hidden_states` / `output_attentions` behave as in every transformers model,
and bad inputs stop with an error naming the argument (or, for documented truncation, a warning with exact counts).
Real tiny models throughout (tests/conftest.py)."""

import copy
import warnings

import pytest
import torch
from conftest import SONAR_DIM
from transformers import GenerationConfig

from sonar_llm_hf import SonarLLMForCausalSentenceModeling
from sonar_llm_hf.models.tokenization_sonar import encode_source, encode_target

PROMPTS = [["The cat sat on the mat.", "It was happy."], ["Tom had a red car."]]
DOCUMENTS = [
    ["The cat sat on the mat.", "It was happy.", "End of sequence."],
    ["Tom had a red car.", "End of sequence."],
]
FAST = dict(max_length=12)


def documents_batch(model, documents=DOCUMENTS):
    """Zero-padded embeddings (B, T, d), mask (B, T) and -100-padded labels (B, T, L); sentence 0 is no target."""
    width = max(len(doc) for doc in documents)
    rows = [encode_target(model.tokenizer, doc) for doc in documents]
    length = max(len(r) for doc in rows for r in doc)
    embeddings = torch.zeros(len(documents), width, SONAR_DIM)
    mask = torch.zeros(len(documents), width, dtype=torch.long)
    labels = torch.full((len(documents), width, length), -100, dtype=torch.long)
    for b, doc in enumerate(documents):
        embeddings[b, : len(doc)] = model.sonar_encoder.encode(doc)
        mask[b, : len(doc)] = 1
        for t, ids in enumerate(rows[b][1:], start=1):
            labels[b, t, : len(ids)] = torch.tensor(ids)
    return embeddings, mask, labels


# -- item 2: a partial GenerationConfig merges with the saved one -----------------------------------------------------


def test_partial_generation_config_overrides_only_what_it_sets(sonar_llm, tmp_path):
    sonar_llm.generation_config.num_beams = 1  # a saved setting the partial config must keep
    sonar_llm.generation_config.max_length = 12
    sonar_llm.save_pretrained(tmp_path)
    model = SonarLLMForCausalSentenceModeling.from_pretrained(tmp_path)
    assert model.generation_config.num_beams == 1

    partial = model.generate(PROMPTS, generation_config=GenerationConfig(max_new_sentences=2))
    explicit = model.generate(PROMPTS, num_beams=1, max_length=12, max_new_sentences=2)
    assert partial.sentences == explicit.sentences and all(len(s) == 2 for s in partial.sentences)
    # what the passed config sets wins over the saved config; keyword options win over both
    beam = model.generate(PROMPTS, generation_config=GenerationConfig(num_beams=3, max_new_sentences=2))
    assert beam.sentences == model.generate(PROMPTS, num_beams=3, max_length=12, max_new_sentences=2).sentences
    on_top = model.generate(PROMPTS, generation_config=GenerationConfig(max_new_sentences=2), max_new_sentences=1)
    assert [len(s) for s in on_top.sentences] == [1, 1] and on_top.sentences == [s[:1] for s in explicit.sentences]
    # the saved config itself is left alone
    assert model.generation_config.max_new_sentences is None and model.generation_config.num_beams == 1


def test_generation_config_settings_that_do_not_apply_are_reported(sonar_llm):
    with pytest.warns(UserWarning, match=r"\['max_new_tokens'\].*ignored.*max_new_sentences"):
        sonar_llm.generate(PROMPTS[:1], generation_config=GenerationConfig(max_new_tokens=5, max_new_sentences=1),
                           num_beams=1, **FAST)  # fmt: skip
    with pytest.raises(TypeError, match="max_new_tokens.*max_new_sentences"):
        sonar_llm.generate(PROMPTS[:1], max_new_tokens=5)
    with pytest.raises(TypeError, match="GenerationConfig"):
        sonar_llm.generate(PROMPTS[:1], generation_config={"num_beams": 1})


# -- item 6: return_dict=False, hidden states and attentions ----------------------------------------------------------


def test_sonar_llm_forward_tuples_hidden_states_and_attentions(sonar_llm):
    embeddings, mask, labels = documents_batch(sonar_llm)
    as_dict = sonar_llm(embeddings, mask, labels=labels)
    as_tuple = sonar_llm(embeddings, mask, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict.to_tuple())
    torch.testing.assert_close(as_tuple[0], as_dict.loss)  # loss first, as Trainer reads it
    torch.testing.assert_close(as_tuple[1], as_dict.predicted_embeddings)
    without_labels = sonar_llm(embeddings, mask, use_cache=False, return_dict=False)
    assert len(without_labels) == 1 and without_labels[0].shape == embeddings.shape

    layers = sonar_llm.config.llama_config.num_hidden_layers
    out = sonar_llm(embeddings, mask, output_hidden_states=True)
    assert len(out.hidden_states) == layers + 1
    assert all(h.shape == (2, 3, sonar_llm.config.hidden_size) for h in out.hidden_states)
    torch.testing.assert_close(sonar_llm.sentence_out_proj(out.hidden_states[-1]), out.predicted_embeddings)
    sonar_llm.config.output_hidden_states = True  # the config default reaches the backbone too
    assert len(sonar_llm(embeddings, mask).hidden_states) == layers + 1
    sonar_llm.config.output_hidden_states = False

    sonar_llm.set_attn_implementation("eager")  # SDPA computes no attention weights (transformers' rule)
    attentions = sonar_llm(embeddings, mask, output_attentions=True).attentions
    heads = sonar_llm.config.llama_config.num_attention_heads
    assert len(attentions) == layers and attentions[0].shape == (2, heads, 3, 3)
    torch.testing.assert_close(attentions[0].sum(-1), torch.ones(2, heads, 3))
    assert torch.all(attentions[0][..., 0, 1:] == 0)  # causal


def test_sonar_text_models_honour_return_dict_and_outputs(tiny_sonar_encoder, tiny_sonar_decoder):
    encoder, decoder = copy.deepcopy(tiny_sonar_encoder), copy.deepcopy(tiny_sonar_decoder)
    ids = torch.tensor(encode_source(encoder.tokenizer, ["The cat sat on the mat."]))
    as_dict = encoder(ids, output_hidden_states=True)
    last, pooled, hidden = encoder(ids, output_hidden_states=True, return_dict=False)
    torch.testing.assert_close(pooled, as_dict.pooler_output)
    assert len(hidden) == encoder.config.encoder_layers + 1
    encoder.set_attn_implementation("eager")
    assert len(encoder(ids, output_attentions=True).attentions) == encoder.config.encoder_layers

    labels = torch.tensor(encode_target(decoder.tokenizer, ["The cat sat on the mat."]))
    memory = encoder(ids).pooler_output
    as_dict = decoder(sentence_embeddings=memory, labels=labels, output_hidden_states=True)
    as_tuple = decoder(sentence_embeddings=memory, labels=labels, return_dict=False)
    torch.testing.assert_close(as_tuple[0], as_dict.loss)
    torch.testing.assert_close(as_tuple[1], as_dict.logits)
    assert len(as_dict.decoder_hidden_states) == decoder.config.decoder_layers + 1
    # `config.return_dict=False` changes what forward returns, never what the text methods compute
    expected = decoder.decode(memory, num_beams=2, max_length=10)
    decoder.config.return_dict = encoder.config.return_dict = False
    assert isinstance(decoder(sentence_embeddings=memory, labels=labels), tuple)
    assert isinstance(encoder(ids), tuple)
    assert decoder.decode(memory, num_beams=2, max_length=10) == expected
    torch.testing.assert_close(encoder.encode(["The cat sat on the mat."]), memory)


# -- item 10: bad inputs ----------------------------------------------------------------------------------------------


def test_prompt_longer_than_max_sentences_is_refused(sonar_llm):
    with pytest.raises(ValueError, match=r"Prompt 0 already holds 2 sentences.*max_sentences=1.*max_sentences` >= 2"):
        sonar_llm.generate(PROMPTS, max_sentences=1, num_beams=1, **FAST)
    sonar_llm.config.add_begin = True
    with pytest.raises(ValueError, match="3 sentences \\(the begin sentence included\\)"):
        sonar_llm.generate(PROMPTS, max_sentences=2, num_beams=1, **FAST)
    sonar_llm.config.add_begin = False
    # a prompt holding exactly `max_sentences` sentences still grows by one, as the reference's `<=` loop does
    out = sonar_llm.generate(PROMPTS[:1], max_sentences=2, eos_threshold=1.0, num_beams=1, **FAST)
    assert len(out.sentences[0]) == 1


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(num_beams=0), ValueError, "`num_beams` must be at least 1, got 0"),
        (dict(num_beams=2.5), TypeError, "`num_beams` must be an integer"),
        (dict(max_new_sentences=-1), ValueError, "`max_new_sentences` must be at least 1"),
        (dict(max_new_sentences=0), ValueError, "`max_new_sentences` must be at least 1"),
        (dict(max_sentences=0), ValueError, "`max_sentences` must be at least 1"),
        (dict(do_sample=True, top_p=2.0), ValueError, r"`top_p` must lie in \(0, 1\]"),
        (dict(top_p=0.0), ValueError, "`top_p`"),
        (dict(do_sample=True, temperature=0.0), ValueError, "`temperature` must be > 0.*do_sample=False"),
        (dict(temperature=-1.0), ValueError, "`temperature` must be > 0"),
        (dict(top_k=-1), ValueError, "`top_k`"),
        (dict(max_length=2), ValueError, r"`max_length` must be at least 3.*\[</s>, lang\]"),
        (dict(max_length=513), ValueError, "`max_length` is 513 but the SONAR decoder has 512 positions"),
        (dict(batch_size=0), ValueError, "`batch_size`"),
        (dict(use_cache="yes"), TypeError, "`use_cache` must be True or False"),
        (dict(eos_threshold=2.0), ValueError, "`eos_threshold`"),
    ],
)
def test_bad_generation_options_are_refused(sonar_llm, options, error, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an invalid value is an error, not first "ignored" with a warning
        with pytest.raises(error, match=message):
            sonar_llm.generate(PROMPTS, **{**FAST, **options})


def test_bad_decode_options_are_refused(tiny_sonar_decoder):
    embeddings = torch.randn(2, SONAR_DIM)
    for options, message in [
        (dict(num_beams=0), "`num_beams` must be at least 1"),
        (dict(max_length=2), "`max_length` must be at least 3"),
        (dict(max_length=600), "`max_length` is 600 but the SONAR decoder has 512 positions; pass `max_length` <= 5"),
        (dict(do_sample=True, top_p=2.0, beam_search="transformers"), r"`top_p` must lie in \(0, 1\]"),
        (dict(do_sample=True, temperature=0.0, num_beams=1), "`temperature` must be > 0"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_sonar_decoder.decode(embeddings, **options)
    # transformers' own `generate` (and `forward`) stop at the decoder's positions too, instead of extrapolating
    positions = tiny_sonar_decoder.config.max_position_embeddings
    with pytest.raises(ValueError, match=f"would run {positions + 1} positions but has {positions}"):
        tiny_sonar_decoder(sentence_embeddings=embeddings[:1], decoder_input_ids=torch.full((1, positions + 1), 5))
    prompt = tiny_sonar_decoder.decoder_prompt(1, "eng_Latn")
    with pytest.raises(ValueError, match=f"would run {positions + 1} positions"):
        tiny_sonar_decoder.generate(sentence_embeddings=embeddings[:1], decoder_input_ids=prompt, max_length=600,
                                    min_length=600, num_beams=1, do_sample=False)  # fmt: skip


def test_bad_prompts_name_their_type(sonar_llm):
    with pytest.raises(TypeError, match="`prompts` must be .* got int"):
        sonar_llm.generate(123)
    with pytest.raises(TypeError, match="got dict"):
        sonar_llm.generate({"text": "The cat sat."})
    with pytest.raises(TypeError, match="dtype torch.int64.*float SONAR embeddings"):
        sonar_llm.generate(torch.ones(1, 2, SONAR_DIM, dtype=torch.long), num_beams=1, **FAST)
    with pytest.raises(TypeError, match="dtype torch.int32"):
        sonar_llm.generate([torch.ones(2, SONAR_DIM, dtype=torch.int32)], num_beams=1, **FAST)
    with pytest.raises(ValueError, match="empty"):
        sonar_llm.generate([])


def test_labels_outside_the_vocabulary_are_refused(sonar_llm, tiny_sonar_decoder):
    embeddings, mask, labels = documents_batch(sonar_llm)
    vocab = sonar_llm.sonar_decoder.config.vocab_size
    bad = labels.clone()
    bad[1, 1, 2] = vocab + 7
    with pytest.raises(ValueError, match=rf"token id {vocab + 7} at index \(1, 1, 2\).*vocabulary of {vocab} ids"):
        sonar_llm(embeddings, mask, labels=bad)
    bad[1, 1, 2] = -5
    with pytest.raises(ValueError, match=r"token id -5 .*-100 for positions without a target"):
        sonar_llm(embeddings, mask, labels=bad)

    decoder_labels = torch.tensor([[5, 6, tiny_sonar_decoder.config.vocab_size, 2]])
    with pytest.raises(ValueError, match=rf"token id {tiny_sonar_decoder.config.vocab_size} at index \(0, 2\)"):
        tiny_sonar_decoder(sentence_embeddings=torch.randn(1, SONAR_DIM), labels=decoder_labels)
    with pytest.raises(TypeError, match="integer token ids"):
        tiny_sonar_decoder(sentence_embeddings=torch.randn(1, SONAR_DIM), labels=decoder_labels.float())


def test_overlong_text_warns_once_with_tokens_dropped_or_raises_in_strict_mode(tiny_sonar_encoder):
    tokenizer = tiny_sonar_encoder.tokenizer
    texts = [" ".join(["word"] * 600), "Short.", " ".join(["cat"] * 700)]
    lengths = [len(ids) for ids in encode_source(tokenizer, texts, max_length=10**6)]  # [lang] pieces </s>
    dropped = [max(0, n - 514) for n in lengths]
    assert dropped[0] > 0 and dropped[1] == 0 and dropped[2] > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embeddings = tiny_sonar_encoder.encode(texts)
    truncation = [w for w in caught if "truncated" in str(w.message)]
    assert len(truncation) == 1  # one warning per call, however many texts were cut
    message = str(truncation[0].message)
    assert "2 of 3 source text(s) exceeded 514 tokens" in message
    assert f"dropping {sum(dropped)} token(s) in all" in message
    assert f"text 0: {dropped[0]}" in message and f"text 2: {dropped[2]}" in message
    assert embeddings.shape == (3, SONAR_DIM) and torch.isfinite(embeddings).all()

    strict = rf"2 of 3 source text\(s\) exceed `max_length=514`.*text 0: {lengths[0]} tokens"
    with pytest.raises(ValueError, match=strict):
        tiny_sonar_encoder.encode(texts, truncation=False)
    with pytest.raises(ValueError, match="truncation=False"):
        encode_source(tokenizer, texts[:1], truncation=False)
    with pytest.raises(TypeError, match="`truncation`"):
        encode_source(tokenizer, texts[:1], truncation="longest_first")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # within the limit, strict mode changes nothing and says nothing
        assert encode_source(tokenizer, texts[1:2], truncation=False) == encode_source(tokenizer, texts[1:2])
    with pytest.raises(ValueError, match="`max_length` is 600 but the SONAR encoder has 514 positions"):
        tiny_sonar_encoder.encode(texts[1:2], max_length=600)
