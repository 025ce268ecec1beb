"""SONAR encoder folders in the real sentence-transformers 6.x: `SentenceTransformer(folder, trust_remote_code=True)`
with `encode(texts, lang=...)` equal to `SonarTextEncoder.encode`, from the converter, from `save`, and without the
package installed."""

import json
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer
from test_remote_code_sonar import run_without_package  # the child interpreter that cannot import sonar_llm_hf

from sonar_llm_hf import SonarTextEncoder
from sonar_llm_hf.conversion.sonar import convert_sonar
from sonar_llm_hf.integrations.sentence_transformers import (
    MODULE_FILE,
    MODULE_TYPE,
    encode_by_language,
    save_sentence_transformer,
    sonar_sentence_transformer,
    write_sentence_transformers_files,
)
from sonar_llm_hf.testing.tiny import make_fs2_sonar_state_dict, train_tiny_spm

TEXTS = ["The cat sat on the mat.", "Hello!", "A much longer sentence about a dog that ran in the park all day.",
         "Le chat est sur le tapis."]  # fmt: skip
ST_FILES = ["modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "config_sentence_transformers.json"]
# Both paths sum the same products in another order (sentence-transformers sorts by characters, SONAR by tokens, so
# the batches and their padding differ); fp32 rounding on values of order 1 stays far below this.
ATOL = 1e-6


def _close(actual, expected) -> None:
    torch.testing.assert_close(torch.as_tensor(actual), expected, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny random fairseq2-layout encoder and a SentencePiece model, through the converter."""
    work = tmp_path_factory.mktemp("st_converted")
    torch.manual_seed(0)
    state = {k: v * 0.3 for k, v in make_fs2_sonar_state_dict("encoder", vocab=310, dim=16, layers=2, ffn=32).items()}
    torch.save({"model": state}, work / "encoder.pt")
    spm = train_tiny_spm(work / "spm.model", vocab_size=100)
    convert_sonar(work / "sonar", encoder_path=work / "encoder.pt", tokenizer_path=spm, num_heads=4)
    return work / "sonar"


@pytest.fixture(scope="module")
def st_folder(tiny_sonar_encoder, tmp_path_factory):
    """A folder written by sentence-transformers' own `save`."""
    return save_sentence_transformer(tiny_sonar_encoder, tmp_path_factory.mktemp("st") / "sonar-st")


@pytest.mark.parametrize("lang", ["eng_Latn", "fra_Latn", "deu_Latn"])
def test_encode_with_lang_equals_sonar_encode(tiny_sonar_encoder, lang):
    model = sonar_sentence_transformer(tiny_sonar_encoder)
    embeddings = model.encode(TEXTS, lang=lang, convert_to_tensor=True, batch_size=2)
    _close(embeddings, tiny_sonar_encoder.encode(TEXTS, lang=lang))
    assert model.similarity_fn_name == "cosine"
    assert model.get_model_kwargs() == ["lang"]


def test_default_language_is_english_and_lang_matters(tiny_sonar_encoder):
    model = sonar_sentence_transformer(tiny_sonar_encoder)
    default = model.encode(TEXTS, convert_to_tensor=True)
    _close(default, tiny_sonar_encoder.encode(TEXTS, lang="eng_Latn"))
    french = model.encode(TEXTS, lang="fra_Latn", convert_to_tensor=True)
    assert (default - french).abs().max() > 1e-3  # the language token changes every embedding


def test_bad_language_text_and_kwarg_are_refused(tiny_sonar_encoder):
    model = sonar_sentence_transformer(tiny_sonar_encoder)
    with pytest.raises(ValueError, match="Did you mean: fra_Latn"):
        model.encode(TEXTS, lang="fra_latn")
    with pytest.raises(ValueError, match="language"):  # sentence-transformers refuses undeclared kwargs
        model.encode(TEXTS, language="fra_Latn")
    with pytest.raises(ValueError, match="empty"):
        model.encode(["ok", " "])
    with pytest.raises(TypeError, match="single texts"):
        model.encode([("a pair", "of texts")])


def test_overlong_text_is_truncated_like_sonar_encode(tiny_sonar_encoder):
    long_text = " ".join(["word"] * 600)
    model = sonar_sentence_transformer(tiny_sonar_encoder)
    with pytest.warns(UserWarning, match="truncated"):
        embedding = model.encode([long_text], convert_to_tensor=True)
    with pytest.warns(UserWarning, match="truncated"):
        _close(embedding, tiny_sonar_encoder.encode([long_text]))


def test_mixed_languages_are_grouped_per_call_in_input_order(tiny_sonar_encoder):
    model = sonar_sentence_transformer(tiny_sonar_encoder)
    langs = ["eng_Latn", "eng_Latn", "deu_Latn", "fra_Latn"]
    mixed = encode_by_language(model, TEXTS, langs, convert_to_tensor=True)
    expected = torch.stack([tiny_sonar_encoder.encode([t], lang=lang)[0] for t, lang in zip(TEXTS, langs)])
    _close(mixed, expected)
    as_numpy = encode_by_language(model, TEXTS, langs)
    assert isinstance(as_numpy, np.ndarray)
    _close(as_numpy, expected)
    with pytest.raises(ValueError, match="one SONAR code per text"):
        encode_by_language(model, TEXTS, langs[:2])


def test_saved_folder_loads_with_trust_remote_code(st_folder, tiny_sonar_encoder):
    modules = json.loads((st_folder / "modules.json").read_text())
    assert [m["type"] for m in modules] == [
        MODULE_TYPE,
        "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
    ]
    assert modules[0]["kwargs"] == ["lang"]
    assert json.loads((st_folder / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "mean"
    assert json.loads((st_folder / "config_sentence_transformers.json").read_text())["similarity_fn_name"] == "cosine"
    with pytest.raises(ValueError, match="trust_remote_code"):
        SentenceTransformer(str(st_folder), device="cpu")
    model = SentenceTransformer(str(st_folder), trust_remote_code=True, device="cpu")
    assert type(model[0]).__module__.startswith("transformers_modules.")  # the folder's copy of the module
    assert model.max_seq_length == tiny_sonar_encoder.config.max_position_embeddings
    _close(
        model.encode(TEXTS, lang="fra_Latn", convert_to_tensor=True), tiny_sonar_encoder.encode(TEXTS, lang="fra_Latn")
    )
    # and the folder is still a plain transformers folder
    again = SonarTextEncoder.from_pretrained(st_folder)
    _close(again.encode(TEXTS), tiny_sonar_encoder.encode(TEXTS))


def test_converter_files_equal_what_sentence_transformers_save_writes(st_folder, tiny_sonar_encoder, tmp_path):
    tiny_sonar_encoder.save_pretrained(tmp_path)
    write_sentence_transformers_files(tmp_path, tiny_sonar_encoder.config)
    for name in ST_FILES:
        assert json.loads((tmp_path / name).read_text()) == json.loads((st_folder / name).read_text()), name
    assert (tmp_path / MODULE_FILE).read_bytes() == (st_folder / MODULE_FILE).read_bytes()
    with pytest.raises(ValueError, match="SONAR text encoders"):
        write_sentence_transformers_files(tmp_path, object())


def test_converted_encoder_folder_loads_in_sentence_transformers(converted):
    folder = converted / "encoder"
    for name in [*ST_FILES, MODULE_FILE]:
        assert (folder / name).exists(), name
    model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    encoder = SonarTextEncoder.from_pretrained(folder).eval()
    for lang in ("eng_Latn", "fra_Latn"):
        _close(model.encode(TEXTS, lang=lang, convert_to_tensor=True), encoder.encode(TEXTS, lang=lang))
    assert model.get_embedding_dimension() == encoder.config.d_model


def test_converted_folder_loads_without_the_package(converted, tmp_path):
    code = f"""
import json
from sentence_transformers import SentenceTransformer
model = SentenceTransformer({str(converted / "encoder")!r}, trust_remote_code=True, device="cpu")
result = {{"module": type(model[0]).__module__, "kwargs": model.get_model_kwargs(),
          "fra": model.encode({TEXTS!r}, lang="fra_Latn").tolist(), "eng": model.encode({TEXTS!r}).tolist()}}
print("RESULT " + json.dumps(result))
"""
    remote = run_without_package(code, tmp_path)
    assert remote["module"].startswith("transformers_modules.") and remote["kwargs"] == ["lang"]
    encoder = SonarTextEncoder.from_pretrained(converted / "encoder").eval()
    _close(remote["fra"], encoder.encode(TEXTS, lang="fra_Latn"))
    _close(remote["eng"], encoder.encode(TEXTS, lang="eng_Latn"))


def test_training_mode_runs_the_plain_forward_with_gradients(tiny_sonar_encoder):
    import copy

    encoder = copy.deepcopy(tiny_sonar_encoder)
    encoder.tokenizer = tiny_sonar_encoder.tokenizer
    model = sonar_sentence_transformer(encoder).train()
    features = model.preprocess(TEXTS[:2], lang="fra_Latn")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncation or other warning on plain input
        embedding = model(features, lang="fra_Latn")["sentence_embedding"]
    embedding.sum().backward()
    assert encoder.encoder.layers[0].fc1.weight.grad is not None


def test_a_loaded_folder_saves_again_with_sentence_transformers_own_save(st_folder, tiny_sonar_encoder, tmp_path):
    model = SentenceTransformer(str(st_folder), trust_remote_code=True, device="cpu")
    model.save(str(tmp_path / "again"))
    modules = json.loads((tmp_path / "again" / "modules.json").read_text())
    assert modules[0]["type"] == MODULE_TYPE and modules[0]["kwargs"] == ["lang"]
    assert (tmp_path / "again" / MODULE_FILE).exists() and (tmp_path / "again" / "tokenizer.json").exists()
    again = SentenceTransformer(str(tmp_path / "again"), trust_remote_code=True, device="cpu")
    expected = tiny_sonar_encoder.encode(TEXTS, lang="deu_Latn")
    _close(again.encode(TEXTS, lang="deu_Latn", convert_to_tensor=True), expected)
