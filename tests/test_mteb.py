"""The SONAR encoder in the real mteb 2.x: `mteb.evaluate` on tiny local tasks (no downloads), with the language of
each call taken from the task, both sides of a bitext pair in their own language."""

import numpy as np
import pytest
import torch

pytest.importorskip("mteb")
import mteb
from datasets import Dataset, DatasetDict
from mteb.mocks.mock_tasks.bitext_mining import (
    MockBitextMiningTask,
    MockMultilingualParallelBitextMiningTask,
)
from mteb.mocks.mock_tasks.sts import MockSTSTask

from sonar_llm_hf import SONAR_LANGUAGES, SonarTextEncoder, SonarTextEncoderConfig
from sonar_llm_hf.integrations.mteb import (
    SONAR_MTEB_LANGUAGES,
    SonarMTEBEncoder,
    sonar_language,
    sonar_model_meta,
    sonar_subsets,
)

ENGLISH = ["The cat sat on the mat.", "A dog ran in the park.", "Tom had a red car.", "Lily liked to read books."]
FRENCH = ["Le chat est sur le tapis.", "Bonjour, mon nom est Paul.", "Je travaille comme professeur.",
          "Il fait beau aujourd'hui."]  # fmt: skip


def _task(base, name: str, eval_langs: dict, subsets: dict, **extra):
    """A local copy of an mteb mock task with our languages and data: nothing is downloaded."""

    class Task(base):
        metadata = base.metadata.model_copy(update={"name": name, "eval_langs": eval_langs})

        def load_data(self, num_proc=None, **kwargs):
            self.dataset = DatasetDict({subset: DatasetDict({"test": Dataset.from_dict(columns)})
                                        for subset, columns in subsets.items()})  # fmt: skip
            self.data_loaded = True

    for key, value in extra.items():
        setattr(Task, key, value)
    return Task()


class Recorder:
    """Records the language and texts of every `encode` call of one encoder instance."""

    def __init__(self, encoder, monkeypatch):
        self.calls = []
        original = encoder.encode

        def encode(texts, lang="eng_Latn", **kwargs):
            self.calls.append((lang, list(texts)))
            return original(texts, lang=lang, **kwargs)

        monkeypatch.setattr(encoder, "encode", encode)


def _evaluate(model, task):
    return mteb.evaluate(model, task, cache=None, show_progress_bar=False).task_results[0].scores["test"]


@pytest.fixture
def model(tiny_sonar_encoder):
    return SonarMTEBEncoder(tiny_sonar_encoder, model_meta=sonar_model_meta("test/tiny-sonar"))


@pytest.mark.parametrize("code, expected", [
    ("eng-Latn", "eng_Latn"), ("eng_Latn", "eng_Latn"), ("ara-Arab", "arb_Arab"), ("fas-Arab", "pes_Arab"),
    ("cmn-Hans", "zho_Hans"), ("cmn-Hant", "zho_Hant"), ("swa-Latn", "swh_Latn"), ("msa-Latn", "zsm_Latn"),
    ("lav-Latn", "lvs_Latn"), ("nor-Latn", "nob_Latn"), ("aze-Arab", "azb_Arab"), ("aze-Latn", "azj_Latn"),
    ("kur-Arab", "ckb_Arab"), ("ekk-Latn", "est_Latn"),
])  # fmt: skip
def test_mteb_codes_map_to_sonar_languages(code, expected):
    assert sonar_language(code) == expected


@pytest.mark.parametrize("code, message", [
    ("lat-Latn", "no language for 'lat-Latn'"), ("ara-Latn", "SONAR has arb_Arab"), ("english", "Cannot read"),
])  # fmt: skip
def test_unmapped_languages_are_refused_by_name(code, message):
    with pytest.raises(ValueError, match=message):
        sonar_language(code)


def test_model_meta_describes_sonar():
    meta = sonar_model_meta()
    assert (meta.name, meta.license, meta.embed_dim, meta.max_tokens) == ("facebook/SONAR", "cc-by-nc-4.0", 1024, 512)
    assert meta.similarity_fn_name.value == "cosine" and meta.loader is SonarMTEBEncoder
    assert len(meta.languages) == len(SONAR_LANGUAGES) == 202 and set(SONAR_MTEB_LANGUAGES) == set(meta.languages)
    assert all(sonar_language(code) in SONAR_LANGUAGES for code in meta.languages)
    with torch.device("meta"):
        full = SonarTextEncoder(SonarTextEncoderConfig())  # the released architecture's shapes, no memory
    assert meta.n_parameters == sum(p.numel() for p in full.parameters())
    assert meta.n_embedding_parameters == full.encoder.embed_tokens.weight.numel()
    assert meta.memory_usage_mb == round(meta.n_parameters * 4 / 2**20)


def test_bitext_pair_sides_get_their_own_languages(model, tiny_sonar_encoder, monkeypatch):
    recorder = Recorder(tiny_sonar_encoder, monkeypatch)
    task = _task(MockBitextMiningTask, "SonarTinyEngFra", {"eng-fra": ["eng-Latn", "fra-Latn"]},
                 {"eng-fra": {"sentence1": ENGLISH, "sentence2": FRENCH}})  # fmt: skip
    scores = _evaluate(model, task)
    assert recorder.calls == [("eng_Latn", ENGLISH), ("fra_Latn", FRENCH)]
    # mteb's accuracy is the nearest-neighbour accuracy of exactly these embeddings
    source = torch.nn.functional.normalize(tiny_sonar_encoder.encode(ENGLISH, lang="eng_Latn"), dim=-1)
    target = torch.nn.functional.normalize(tiny_sonar_encoder.encode(FRENCH, lang="fra_Latn"), dim=-1)
    expected = (source @ target.T).argmax(dim=1).eq(torch.arange(len(ENGLISH))).float().mean().item()
    assert scores[0]["accuracy"] == pytest.approx(expected)


def test_bitext_sides_follow_columns_not_call_order(model, tiny_sonar_encoder, monkeypatch):
    recorder = Recorder(tiny_sonar_encoder, monkeypatch)
    task = _task(
        MockBitextMiningTask,
        "SonarTinyFraEngReordered",
        {"fra-eng": ["fra-Latn", "eng-Latn"]},
        {"fra-eng": {"sentence2": ENGLISH, "sentence1": FRENCH}},
    )  # sentence2 is encoded first
    _evaluate(model, task)
    assert recorder.calls == [("eng_Latn", ENGLISH), ("fra_Latn", FRENCH)]


def test_parallel_bitext_columns_are_languages(model, tiny_sonar_encoder, monkeypatch):
    recorder = Recorder(tiny_sonar_encoder, monkeypatch)
    scores = _evaluate(model, MockMultilingualParallelBitextMiningTask())
    assert [lang for lang, _ in recorder.calls] == ["eng_Latn", "fra_Latn"]
    assert {score["hf_subset"] for score in scores} == {"eng_Latn-fra_Latn", "fra_Latn-eng_Latn"}


def test_macro_language_subset_runs_in_sonar_code(model, tiny_sonar_encoder, monkeypatch):
    recorder = Recorder(tiny_sonar_encoder, monkeypatch)
    task = _task(MockBitextMiningTask, "SonarTinyCmn", {"cmn": ["cmn-Hans"]},
                 {"cmn": {"sentence1": ENGLISH, "sentence2": ENGLISH[::-1]}})  # fmt: skip
    _evaluate(model, task)
    assert {lang for lang, _ in recorder.calls} == {"zho_Hans"}


def test_ambiguous_or_unknown_languages_are_refused(model, tiny_sonar_encoder):
    cross_sts = _task(
        MockSTSTask,
        "SonarTinyCrossSTS",
        {"en-de": ["eng-Latn", "deu-Latn"]},
        {"en-de": {"sentence1": ENGLISH, "sentence2": FRENCH, "score": [1.0, 0.0, 0.5, 0.2]}},
    )
    with pytest.raises(ValueError, match="holds 2 languages"):
        _evaluate(model, cross_sts)
    latin = _task(MockBitextMiningTask, "SonarTinyLatin", {"lat": ["lat-Latn"]},
                  {"lat": {"sentence1": ENGLISH, "sentence2": FRENCH}})  # fmt: skip
    with pytest.raises(ValueError, match="no language for 'lat-Latn'"):
        _evaluate(model, latin)
    fixed = SonarMTEBEncoder(tiny_sonar_encoder, lang="eng_Latn", model_meta=sonar_model_meta("test/tiny-sonar"))
    assert "cosine_spearman" in _evaluate(fixed, cross_sts)[0]


def test_empty_texts_are_embedded_like_fairseq2_with_a_warning(model, tiny_sonar_encoder):
    task = _task(MockBitextMiningTask, "SonarTinyEmpty", {"fra": ["fra-Latn"]},
                 {"fra": {"sentence1": FRENCH[:2] + [""], "sentence2": FRENCH[:2] + [" "]}})  # fmt: skip
    task.load_data()
    loader = mteb._create_dataloaders._create_dataloader_from_texts(FRENCH[:2] + [" "])
    with pytest.warns(UserWarning, match="1 of 3 texts"):
        embeddings = model.encode(loader, task_metadata=task.metadata, hf_split="test", hf_subset="fra")
    tokenizer = tiny_sonar_encoder.tokenizer
    empty = tiny_sonar_encoder.encode_token_ids([[tokenizer.convert_tokens_to_ids("fra_Latn"), 2]])
    np.testing.assert_allclose(embeddings[2:], empty.numpy(), atol=1e-6)
    np.testing.assert_allclose(embeddings[:2], tiny_sonar_encoder.encode(FRENCH[:2], lang="fra_Latn"), atol=1e-6)


def test_model_meta_loads_a_converted_folder(tiny_sonar_encoder, tmp_path):
    tiny_sonar_encoder.save_pretrained(tmp_path)
    loaded = sonar_model_meta(name=str(tmp_path)).load_model()
    assert isinstance(loaded, SonarMTEBEncoder) and loaded.mteb_model_meta.name == str(tmp_path)
    torch.testing.assert_close(loaded.model.encode(ENGLISH), tiny_sonar_encoder.encode(ENGLISH), rtol=0, atol=0)


def test_readme_example_prints_mteb_scores(capsys, tmp_path):
    import runpy
    from pathlib import Path

    script = Path(__file__).parents[1] / "examples" / "sonar_embeddings.py"
    runpy.run_path(str(script), run_name="example").get("main")(["--sentences", "40", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    diff = float(out.split("max |diff| ")[1].split()[0])
    assert diff <= 1e-6  # the folder's sentence-transformers computes what SonarTextEncoder does
    assert "mteb StoryWorldWordDropBitext (40 pairs): accuracy" in out
    assert (tmp_path / "demo-sonar-encoder" / "modules.json").exists()


def test_sonar_subsets_keeps_what_the_wrapper_can_embed():
    task = _task(MockBitextMiningTask, "SonarTinySubsets",
                 {"fra-eng": ["fra-Latn", "eng-Latn"], "lat-eng": ["lat-Latn", "eng-Latn"], "cmn": ["cmn-Hans"]},
                 {})  # fmt: skip
    assert sonar_subsets(task) == ["fra-eng", "cmn"]
    sts = _task(MockSTSTask, "SonarTinySubsetsSTS", {"en-de": ["eng-Latn", "deu-Latn"], "de": ["deu-Latn"]}, {})
    assert sonar_subsets(sts) == ["de"]
