"""The real `transformers.pipeline` on the packaged demo model: by task name with the package, by a saved folder's
config alone (no task name) as remote code, batched, streamed, with generation options passed through. (Without the
package at all: the virtualenv test of test_remote_code.py.)"""

import json

import pytest
from transformers import AutoModel, pipeline

from sonar_llm_hf import SentenceStreamer, SonarLLMSentencePipeline
from sonar_llm_hf.conversion.model_card import build_model_card
from sonar_llm_hf.demo import PACKAGED_DEMO
from sonar_llm_hf.models.pipeline_sonar_llm import HUB_TASK, PACKAGE_TASK, custom_pipelines_entry

PROMPTS = [
    "Once upon a time, there was a little boy named Tom. Tom had a red ball.",
    "Mia liked cats.",
    "One day, a girl named Lily went to the park. She saw a big dog. The dog was sad.",
]
OPTIONS = dict(max_new_sentences=2)


@pytest.fixture(scope="module")
def pipe():
    return pipeline(PACKAGE_TASK, model=str(PACKAGED_DEMO))


@pytest.fixture(scope="module")
def saved_demo(tmp_path_factory):
    """The demo saved with `save_pretrained`, as a Hub repo holds it (code, config, weights, tokenizer)."""
    path = tmp_path_factory.mktemp("saved_demo")
    AutoModel.from_pretrained(PACKAGED_DEMO).save_pretrained(path)
    return path


class Collect(SentenceStreamer):
    def __init__(self):
        self.steps, self.ended = [], False

    def put(self, value):
        self.steps.append(list(value))

    def end(self):
        self.ended = True


def test_task_name_with_the_package_returns_what_generate_returns(pipe):
    assert isinstance(pipe, SonarLLMSentencePipeline)
    expected = pipe.model.generate(PROMPTS[0], **OPTIONS)
    assert expected.sentences[0]  # the demo model continues the story
    assert pipe(PROMPTS[0], **OPTIONS) == [{"generated_text": expected.full_texts[0]}]
    only_new = pipe(PROMPTS[0], return_full_text=False, return_sentences=True, **OPTIONS)
    assert only_new == [{"generated_text": expected.texts[0], "generated_sentences": expected.sentences[0],
                         "finished": expected.finished[0]}]  # fmt: skip
    # one prompt given as its sentences
    as_sentences = pipe([expected.prompt_sentences[0]], **OPTIONS)
    assert as_sentences == [[{"generated_text": expected.full_texts[0]}]]


def test_batches_are_one_generate_call_each(pipe, monkeypatch):
    together = pipe.model.generate(PROMPTS, **OPTIONS).full_texts
    one_by_one = [pipe.model.generate(p, **OPTIONS).full_texts[0] for p in PROMPTS]
    calls = []
    generate = pipe.model.generate
    counting = lambda prompts, **kw: calls.append(len(prompts)) or generate(prompts, **kw)  # noqa: E731
    monkeypatch.setattr(pipe.model, "generate", counting)
    assert pipe(PROMPTS, **OPTIONS) == [[{"generated_text": t}] for t in one_by_one]
    assert calls == [1, 1, 1]
    calls.clear()
    assert pipe(PROMPTS, batch_size=3, **OPTIONS) == [[{"generated_text": t}] for t in together]
    assert calls == [3]
    calls.clear()
    streamed = list(pipe((p for p in PROMPTS), batch_size=2, **OPTIONS))  # a generator streams results lazily
    assert len(streamed) == 3 and calls == [2, 1]


def test_generation_options_pass_through(pipe):
    greedy = pipe.model.generate(PROMPTS[1], num_beams=1, max_new_sentences=1)
    assert pipe(PROMPTS[1], num_beams=1, max_new_sentences=1)[0]["generated_text"] == greedy.full_texts[0]
    sample = dict(do_sample=True, num_beams=1, seed=3, num_return_sequences=3, return_full_text=False)  # plain
    sampled = pipe(PROMPTS[0], **sample, **OPTIONS)
    assert len(sampled) == 3 and len({r["generated_text"] for r in sampled}) > 1
    again = pipe(PROMPTS[0], **sample, **OPTIONS)
    assert again == sampled  # the seed makes sampling reproducible
    with pytest.raises(ValueError, match="needs `do_sample=True`"):
        pipe(PROMPTS[0], num_return_sequences=2)
    with pytest.raises(TypeError, match="Unknown option.*max_new_tokens"):
        pipe(PROMPTS[0], max_new_tokens=5)
    with pytest.raises(TypeError, match="Each prompt must be a string"):
        pipe([123])


def test_tokenizer_and_embedding_prompts(pipe):
    expected = pipe.model.generate(PROMPTS[0], **OPTIONS)
    bare = AutoModel.from_pretrained(PACKAGED_DEMO)
    bare.tokenizer = None  # a folder without tokenizer: the pipeline's tokenizer is used
    with_tokenizer = pipeline(PACKAGE_TASK, model=bare, tokenizer=pipe.model.tokenizer)
    assert with_tokenizer(PROMPTS[0], **OPTIONS) == [{"generated_text": expected.full_texts[0]}]
    with pytest.raises(ValueError, match="no SONAR tokenizer"):
        pipeline(PACKAGE_TASK, model=bare)(PROMPTS[0], **OPTIONS)
    embeddings = pipe.model.sonar_encoder.encode(expected.prompt_sentences[0])  # (T, d): one prompt as embeddings
    assert pipe(embeddings, **OPTIONS) == [{"generated_text": pipe.model.generate(embeddings, **OPTIONS).texts[0]}]


def test_streamer_receives_each_sentence_as_it_is_decoded(pipe):
    streamer = Collect()
    out = pipe(PROMPTS[:2], batch_size=2, streamer=streamer, return_full_text=False, return_sentences=True, **OPTIONS)
    assert streamer.ended and len(streamer.steps) == 2  # one put per sentence step, both prompts in each
    for index, result in enumerate(out):
        assert [s for step in streamer.steps for i, s in step if i == index] == result[0]["generated_sentences"]


def test_saved_folder_lists_the_pipeline_and_needs_no_task_name(pipe, saved_demo, tmp_path):
    config = json.loads((saved_demo / "config.json").read_text())
    assert config["custom_pipelines"] == custom_pipelines_entry()
    assert (saved_demo / "pipeline_sonar_llm.py").exists()
    expected = pipe(PROMPTS[0], **OPTIONS)
    for task in (None, HUB_TASK):
        remote = pipeline(task, model=str(saved_demo), trust_remote_code=True)
        assert type(remote).__name__ == "SonarLLMSentencePipeline"
        assert type(remote).__module__.startswith("transformers_modules")  # the folder's own copy
        assert remote(PROMPTS[0], **OPTIONS) == expected
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        pipeline(model=str(saved_demo))
    # a pipeline saved as a pipeline writes the same entry
    pipe.save_pretrained(tmp_path / "from_pipeline")
    assert json.loads((tmp_path / "from_pipeline" / "config.json").read_text())["custom_pipelines"] == config[
        "custom_pipelines"]  # fmt: skip


def test_model_card_pipeline_tag_is_the_task_saved_folders_list(saved_demo):
    model = AutoModel.from_pretrained(saved_demo)
    card = build_model_card("org/demo", None, model.config, source="demo", dropped_parameters=0, trainable=1, total=2)
    assert card.data.pipeline_tag == HUB_TASK == next(iter(model.config.custom_pipelines))
    assert 'pipeline(model="org/demo", trust_remote_code=True)' in card.text
