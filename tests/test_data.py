"""Data pipeline: offline splitting, end sentence, SONAR embeddings cached by datasets (rerun and resume), collator."""

import datasets
import pytest
import torch

from sonar_llm_hf.data import SonarLLMDataCollator, prepare_dataset, split_documents
from sonar_llm_hf.story_world import generate_corpus, story_to_text
from sonar_llm_hf.tokenization_sonar import encode_target

DOCS = [story_to_text(s) for s in generate_corpus(6, seed=3)]


def test_split_documents_caps_and_appends_the_end_sentence():
    raw = datasets.Dataset.from_dict({"text": [DOCS[0], "One sentence only.", "   "]})
    split = split_documents(raw, max_sentences=3, eos_sentence="End of sequence.", begin_sentence="Begin of text.")
    assert len(split) == 2  # the blank document is dropped, with a count printed
    first = split[0]["sentences"]
    assert first[0] == "Begin of text." and first[-1] == "End of sequence." and len(first) == 5
    assert split[1]["sentences"] == ["Begin of text.", "One sentence only.", "End of sequence."]


def test_bad_rows_are_clear_errors(capsys):
    with pytest.raises(TypeError, match="Row 1: column 'text' holds NoneType"):
        split_documents(datasets.Dataset.from_dict({"text": ["A story.", None]}))
    with pytest.raises(TypeError, match="Row 0: column 'text' holds int"):
        split_documents(datasets.Dataset.from_dict({"text": [7, 8]}))
    with pytest.raises(ValueError, match="Unknown language code 'xx_Yyyy'"):
        split_documents(datasets.Dataset.from_dict({"text": ["A story."], "lang": ["xx_Yyyy"]}), lang_column="lang")
    with pytest.raises(ValueError, match="no column 'body'"):
        split_documents(datasets.Dataset.from_dict({"text": ["A story."]}), text_column="body")
    with pytest.raises(ValueError, match="nothing to train on"):
        split_documents(datasets.Dataset.from_dict({"text": ["", "  "]}))
    assert "dropped 2 of 2 empty documents" in capsys.readouterr().out


def test_prepare_dataset_embeds_and_tokenizes(sonar_llm):
    raw = datasets.Dataset.from_dict({"text": DOCS[:2], "lang": ["eng_Latn", "fra_Latn"]})
    prepared = prepare_dataset(raw, sonar_llm, lang_column="lang", progress_bar=False)
    example = prepared[1]
    sentences = example["sentences"]
    assert sentences[-1] == "End of sequence." and example["num_sentences"] == len(sentences)
    expected = sonar_llm.sonar_encoder.encode(sentences, lang="fra_Latn")
    torch.testing.assert_close(torch.tensor(example["sentence_embeddings"]), expected, atol=1e-6, rtol=0)
    assert example["labels"] == encode_target(sonar_llm.tokenizer, sentences, "fra_Latn")


def test_embeddings_are_cached_and_an_interrupted_run_resumes(sonar_llm, tmp_path):
    datasets.Dataset.from_dict({"text": DOCS}).save_to_disk(tmp_path / "raw")
    raw = datasets.load_from_disk(str(tmp_path / "raw"))
    calls = []
    encode = sonar_llm.sonar_encoder.encode

    def counting_encode(*args, **kwargs):
        calls.append(1)
        if fail_after[0] is not None and len(calls) > fail_after[0]:
            raise KeyboardInterrupt("interrupted")
        return encode(*args, **kwargs)

    sonar_llm.sonar_encoder.encode = counting_encode
    fail_after = [1]  # the second shard's embedding is interrupted
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(raw, sonar_llm, shard_size=3, batch_size=3, progress_bar=False)
    fail_after[0] = None
    calls.clear()
    first = prepare_dataset(raw, sonar_llm, shard_size=3, batch_size=3, progress_bar=False)
    assert len(calls) == 1  # only the unfinished shard was embedded again
    calls.clear()
    again = prepare_dataset(raw, sonar_llm, shard_size=3, batch_size=3, progress_bar=False)
    assert calls == [] and again["labels"] == first["labels"]  # everything came from the cache


def test_collator_pads_and_masks():
    features = [
        {"sentence_embeddings": [[1.0, 2.0]] * 3, "labels": [[5, 6, 2], [7, 2], [8, 9, 10, 2]]},
        {"sentence_embeddings": [[3.0, 4.0]] * 2, "labels": [[5, 2], [6, 2]]},
    ]
    batch = SonarLLMDataCollator()(features)
    assert batch["sentence_embeddings"].shape == (2, 3, 2)
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].shape == (2, 3, 4)
    assert (batch["labels"][:, 0] == -100).all()
    assert batch["labels"][0, 2].tolist() == [8, 9, 10, 2] and batch["labels"][1, 2].tolist() == [-100] * 4
    with pytest.raises(ValueError, match="2 embeddings but 1 label rows"):
        SonarLLMDataCollator()([{"sentence_embeddings": [[1.0]] * 2, "labels": [[2]]}])
