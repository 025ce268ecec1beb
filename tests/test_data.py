"""Data pipeline: offline splitting, end sentence, bad input, SONAR embeddings cached by datasets (rerun and
resume), collator."""

import datasets
import numpy as np
import pytest
import torch

from sonar_llm_hf.demo.story_world import generate_corpus, story_to_text
from sonar_llm_hf.models.tokenization_sonar import encode_target
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset, split_documents

DOCS = [story_to_text(s) for s in generate_corpus(6, seed=3)]


def test_split_documents_caps_and_appends_the_end_sentence(capsys):
    raw = datasets.Dataset.from_dict({"text": [DOCS[0], "One sentence only.", "   "]})
    split = split_documents(raw, max_sentences=3, eos_sentence="End of sequence.", begin_sentence="Begin of text.")
    assert len(split) == 2
    assert "kept 2 of 3 documents; skipped 1 empty" in capsys.readouterr().out  # never silently
    first = split[0]["sentences"]
    assert first[0] == "Begin of text." and first[-1] == "End of sequence." and len(first) == 5
    assert split[1]["sentences"] == ["Begin of text.", "One sentence only.", "End of sequence."]
    # one sentence + the end sentence is a training example (the reference keeps every doc with >= 2 entries)
    assert len(split_documents(datasets.Dataset.from_dict({"text": ["Just one."]}))) == 1


def test_bad_rows_are_clear_errors_or_counted_skips(capsys):
    with pytest.raises(TypeError, match="Row 1: column 'text' holds NoneType, not text.*skip_bad_rows"):
        split_documents(datasets.Dataset.from_dict({"text": ["A story.", None]}))
    with pytest.raises(TypeError, match="Row 0: column 'text' holds int"):
        split_documents(datasets.Dataset.from_dict({"text": [7, 8]}))
    with pytest.raises(ValueError, match="Row 0: Unknown language code 'xx_Yyyy'"):
        split_documents(datasets.Dataset.from_dict({"text": ["A story."], "lang": ["xx_Yyyy"]}), lang_column="lang")
    with pytest.raises(ValueError, match="no column 'body'"):
        split_documents(datasets.Dataset.from_dict({"text": ["A story."]}), text_column="body")
    with pytest.raises(ValueError, match="no column 'language'"):
        split_documents(datasets.Dataset.from_dict({"text": ["A story."]}), lang_column="language")
    with pytest.raises(ValueError, match=r"No document is left to train on \(2 rows: 2 empty"):
        split_documents(datasets.Dataset.from_dict({"text": ["", "  "]}))
    capsys.readouterr()

    # opt-in skipping: every skipped row is counted by reason
    raw = datasets.Dataset.from_dict({
        "text": ["A story. It ends.", None, "Un conte. Il finit.", "", "Solo.", "Ein Satz. Noch einer."],
        "lang": ["eng_Latn", "eng_Latn", "xx_Yyyy", "eng_Latn", None, "deu_Latn"],
    })  # fmt: skip
    kept = split_documents(raw, lang_column="lang", skip_bad_rows=True)
    assert kept["sentences"] == [["A story.", "It ends.", "End of sequence."], ["Solo.", "End of sequence."],
                                 ["Ein Satz.", "Noch einer.", "End of sequence."]]  # fmt: skip
    assert kept["lang"] == ["eng_Latn", "eng_Latn", "deu_Latn"]  # a missing language is the default one
    out = capsys.readouterr().out
    assert "kept 3 of 6 documents; skipped 1 empty (no sentence), 1 not text, 1 with an unknown language code" in out

    # without the end sentence a one-sentence document has nothing to predict: counted, not kept
    kept = split_documents(datasets.Dataset.from_dict({"text": ["Solo.", "Two here. Yes."]}), eos_sentence=None)
    assert kept["sentences"] == [["Two here.", "Yes."]]
    assert "skipped 1 with fewer than 2 entries" in capsys.readouterr().out


def test_prepare_dataset_embeds_and_tokenizes(sonar_llm):
    raw = datasets.Dataset.from_dict({"text": DOCS[:2], "lang": ["eng_Latn", "fra_Latn"]})
    prepared = prepare_dataset(raw, sonar_llm, lang_column="lang", progress_bar=False)
    assert prepared.features["sentence_embeddings"].feature.feature.dtype == "float32"
    example = prepared[1]
    sentences = example["sentences"]
    assert sentences[-1] == "End of sequence." and example["num_sentences"] == len(sentences)
    assert example["lang"] == "fra_Latn"
    expected = sonar_llm.sonar_encoder.encode(sentences, lang="fra_Latn")
    torch.testing.assert_close(torch.tensor(example["sentence_embeddings"]), expected, atol=1e-6, rtol=0)
    assert example["labels"] == encode_target(sonar_llm.tokenizer, sentences, "fra_Latn")
    # a bare SONAR encoder works too (the paper's defaults: end sentence, no begin sentence)
    with pytest.raises(ValueError, match="has a 'lang' column: pass lang_column='lang'"):
        prepare_dataset(raw, sonar_llm, progress_bar=False)
    raw = raw.remove_columns("lang")
    bare = prepare_dataset(raw.select([0]), sonar_llm.sonar_encoder, tokenizer=sonar_llm.tokenizer, progress_bar=False)
    assert bare[0]["sentences"] == prepared[0]["sentences"] and bare[0]["labels"] == prepared[0]["labels"]
    # the model's begin sentence when its config asks for it
    sonar_llm.config.add_begin = True
    assert prepare_dataset(raw.select([0]), sonar_llm, progress_bar=False)[0]["sentences"][0] == "Begin of text."


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
    again = prepare_dataset(raw, sonar_llm, shard_size=3, batch_size=5, progress_bar=False)
    assert calls == [] and again["labels"] == first["labels"]  # all from the cache (batch size is not a setting)
    with pytest.warns(UserWarning, match="truncated"):  # over-long targets are cut with a warning, not silently
        prepare_dataset(raw, sonar_llm, shard_size=3, max_target_length=8, progress_bar=False)
    assert len(calls) == 2  # a setting that changes the result is a new cache
    calls.clear()
    with torch.no_grad():
        next(sonar_llm.sonar_encoder.parameters()).add_(0.1)
    prepare_dataset(raw, sonar_llm, shard_size=3, progress_bar=False)
    assert len(calls) == 2  # and so is a different encoder


def test_in_memory_datasets_cache_with_a_file_name(sonar_llm, tmp_path):
    raw = datasets.Dataset.from_dict({"text": DOCS[:3]})
    cache = str(tmp_path / "cache" / "train.arrow")
    first = prepare_dataset(raw, sonar_llm, cache_file_name=cache, progress_bar=False)
    assert any(p.name.startswith("train-embed0-") for p in (tmp_path / "cache").iterdir())
    sonar_llm.sonar_encoder.encode = None  # any embedding call would now fail
    rebuilt = datasets.Dataset.from_dict({"text": DOCS[:3]})  # as a rerun would build it: same fingerprint
    again = prepare_dataset(rebuilt, sonar_llm, cache_file_name=cache, progress_bar=False)
    assert again["labels"] == first["labels"]


def test_collator_pads_and_masks():
    features = [
        {"sentence_embeddings": [[1.0, 2.0]] * 3, "labels": [[5, 6, 2], [7, 2], [8, 9, 10, 2]]},
        {"sentence_embeddings": [[3.0, 4.0]] * 2, "labels": [[5, 2], [6, 2]]},
    ]
    batch = SonarLLMDataCollator(label_width=None)(features)  # each batch as wide as its longest target
    assert batch["sentence_embeddings"].shape == (2, 3, 2) and batch["sentence_embeddings"].dtype == torch.float32
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].shape == (2, 3, 4)
    fixed = SonarLLMDataCollator()(features)  # by default every batch has the decoder's 512 tokens per sentence
    assert fixed["labels"].shape == (2, 3, 512) and torch.equal(fixed["labels"][..., :4], batch["labels"])
    assert (fixed["labels"][..., 4:] == -100).all()
    with pytest.raises(ValueError, match="4 target tokens, more than `label_width=3`"):
        SonarLLMDataCollator(label_width=3)(features)
    assert (batch["labels"][:, 0] == -100).all()
    assert batch["labels"][0, 2].tolist() == [8, 9, 10, 2] and batch["labels"][1, 2].tolist() == [-100] * 4
    # numpy rows (a dataset in numpy format) collate the same; padding to a multiple
    as_numpy = [{"sentence_embeddings": np.asarray(f["sentence_embeddings"], dtype=np.float32),
                 "labels": [np.asarray(ids) for ids in f["labels"]]} for f in features]  # fmt: skip
    padded = SonarLLMDataCollator(pad_to_multiple_of=4, label_width=None)(as_numpy)
    assert padded["labels"].shape == (2, 4, 4) and torch.equal(padded["labels"][:, :3], batch["labels"])
    assert torch.equal(padded["sentence_embeddings"][:, :3], batch["sentence_embeddings"])
    with pytest.raises(ValueError, match="2 embeddings but 1 label rows"):
        SonarLLMDataCollator()([{"sentence_embeddings": [[1.0]] * 2, "labels": [[2]]}])


def test_collated_label_count_is_the_models_target_count(sonar_llm):
    """`Trainer` divides by its own count of labels != -100; it must equal the tokens the model sums over."""
    raw = datasets.Dataset.from_dict({"text": DOCS[:4]})
    prepared = prepare_dataset(raw, sonar_llm, max_sentences=4, progress_bar=False)
    batch = SonarLLMDataCollator()([prepared[i] for i in range(4)])
    with torch.no_grad():
        out = sonar_llm(**batch)
        summed = sonar_llm(**batch, num_items_in_batch=1).loss
    assert out.num_target_tokens == (batch["labels"] != -100).sum()
    torch.testing.assert_close(out.loss, summed / out.num_target_tokens)


def test_documents_over_max_sentences_are_cut_with_a_count(capsys):
    long_doc = " ".join(f"Sentence number {i} is here." for i in range(7))
    raw = datasets.Dataset.from_dict({"text": [long_doc, "Short one. Two.", long_doc + " One more."]})
    split = split_documents(raw, max_sentences=5)
    assert [len(s) for s in split["sentences"]] == [6, 3, 6]  # the first 5 sentences and the end sentence
    assert "cut 2 of 3 documents to their first 5 sentences (5 sentences dropped" in capsys.readouterr().out
    split_documents(raw, max_sentences=8)
    assert "cut" not in capsys.readouterr().out


def test_collator_writes_the_duplicated_eos_for_the_model(sonar_llm):
    features = [{"sentence_embeddings": [[1.0] * 16] * 2, "labels": [[5, 2], [7, 8, 2]]}]
    assert SonarLLMDataCollator.for_model(sonar_llm).duplicate_eos_id is None
    sonar_llm.config.duplicate_final_eos_target = True
    batch = SonarLLMDataCollator.for_model(sonar_llm)(features)
    assert batch["labels"][0, 1, :5].tolist() == [7, 8, 2, 2, -100] and (batch["labels"][0, 0] == -100).all()
