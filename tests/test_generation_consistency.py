"""The same answer for the same request: the end sentence follows the model's current state, embedding prompts get the
begin sentence as text prompts do, and generation options follow `GenerationConfig.validate`'s conventions."""

import warnings

import pytest
import torch
from transformers import GenerationConfig

from sonar_llm_hf.cli import main as cli_main

PROMPT = ["The cat sat on the mat.", "It was happy."]
FAST = dict(num_beams=1, max_length=12)


def test_end_sentence_follows_the_model_state(sonar_llm):
    first = sonar_llm.generate([PROMPT], max_new_sentences=1, **FAST)
    sentence = first.sentences[0][0]
    assert sentence.strip() and first.finished == [False]
    # A new end sentence: the same first decoded sentence now ends the document at once (its re-encoding is the end
    # sentence's embedding, cosine 1). A cache keyed on the language and the tokenizer kept the old end sentence.
    sonar_llm.config.eos_sentence = sentence
    again = sonar_llm.generate([PROMPT], max_new_sentences=1, **FAST)
    assert again.sentences == [[]] and again.finished == [True]


@pytest.mark.parametrize("add_begin", [True, False])
def test_embedding_prompts_get_the_begin_sentence_as_text_prompts_do(sonar_llm, add_begin):
    sonar_llm.config.add_begin = add_begin
    from_text = sonar_llm.generate([PROMPT], max_new_sentences=2, **FAST)
    embedded = sonar_llm.sonar_encoder.encode(PROMPT)  # (2, d)
    from_embeddings = sonar_llm.generate(embedded, max_new_sentences=2, **FAST)
    assert from_embeddings.sentences == from_text.sentences
    # Same backbone inputs up to the encoder's batching (float noise): same predictions.
    torch.testing.assert_close(from_embeddings.predicted_embeddings[0], from_text.predicted_embeddings[0],
                               atol=1e-5, rtol=0)  # fmt: skip
    if add_begin:  # the begin sentence counts towards `max_sentences` for both kinds of prompt
        with pytest.raises(ValueError, match="3 sentences \\(the begin sentence included\\)"):
            sonar_llm.generate(embedded, max_sentences=2, **FAST)
        with pytest.raises(ValueError, match="3 sentences \\(the begin sentence included\\)"):
            sonar_llm.generate([PROMPT], max_sentences=2, **FAST)


def _record_decode(model) -> list[dict]:
    calls = []
    decode = model.sonar_decoder.decode

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return decode(*args, **kwargs)

    model.sonar_decoder.decode = recording
    return calls


def test_sampling_keeps_the_beams_it_is_given(sonar_llm):
    """`do_sample=True` with `num_beams=3` is transformers' beam sampling; it used to become `num_beams=1`."""
    calls = _record_decode(sonar_llm)
    sonar_llm.generate([PROMPT], do_sample=True, num_beams=3, seed=0, max_length=12, max_new_sentences=1)
    assert calls[0]["num_beams"] == 3 and calls[0]["do_sample"] is True
    sonar_llm.generate([PROMPT], do_sample=True, seed=0, max_length=12, max_new_sentences=1)  # the saved 5 beams
    assert calls[1]["num_beams"] == 5
    sonar_llm.generate([PROMPT], do_sample=True, num_beams=1, seed=0, max_length=12, max_new_sentences=1)
    assert calls[2]["num_beams"] == 1


def _warnings_of(model, **options) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.generate([PROMPT], max_new_sentences=1, **{**FAST, **options})
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_sampling_options_without_sampling_warn_as_transformers_does(sonar_llm):
    [message] = _warnings_of(sonar_llm, temperature=0.5, top_k=4)
    assert "`temperature=0.5`, `top_k=4` are ignored" in message and "do_sample=True" in message
    assert "`seed=3` is ignored" in _warnings_of(sonar_llm, seed=3)[0]
    assert "`top_p=0.8`" in _warnings_of(sonar_llm, do_sample=False, top_p=0.8)[0]  # both set by the caller
    assert "`top_p=0.8`" in _warnings_of(sonar_llm, generation_config=GenerationConfig(top_p=0.8))[0]
    assert _warnings_of(sonar_llm, do_sample=True, temperature=0.5, seed=3) == []
    assert _warnings_of(sonar_llm, temperature=1.0, top_p=1.0) == []  # values that change nothing
    assert _warnings_of(sonar_llm, latent_temperature=0.1, seed=3) == []  # the seed draws the latent noise
    assert _warnings_of(sonar_llm, min_new_sentences=2, seed=3) == []  # re-decodes draw it too
    # Inherited from the saved generation config: transformers warns unless the caller chose `do_sample=False`.
    sonar_llm.generation_config.top_p = 0.9
    assert "`top_p=0.9`" in _warnings_of(sonar_llm)[0]
    assert _warnings_of(sonar_llm, do_sample=False) == []


def test_cli_sample_means_plain_sampling(tiny_sonar_llm_dir, sonar_llm, capsys):
    prompt = " ".join(PROMPT)
    argv = ["generate", prompt, "--model", str(tiny_sonar_llm_dir), "--sample", "--seed", "0", "--quiet",
            "--max-new-sentences", "2", "--no-pack"]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    expected = sonar_llm.generate(prompt, do_sample=True, num_beams=1, temperature=0.6, top_p=0.9, seed=0,
                                  max_new_sentences=2)  # fmt: skip
    assert printed == expected.sentences[0]
