"""SONAR tokenization: NLLB id layout from a SentencePiece model, SentencePiece-equal ids, saved folders, bad input."""

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer, NllbTokenizer

from sonar_llm_hf.testing_utils import train_tiny_spm
from sonar_llm_hf.tokenization_sonar import (
    SONAR_LANGUAGES,
    build_sonar_tokenizer,
    check_language,
    decode_ids,
    encode_source,
    encode_target,
    suppressed_token_ids,
    validate_texts,
)

TEXTS = [
    "The cat sat on the mat.", "  Leading and trailing spaces.  ", "Double  spaces   inside.", "Numbers 42 and 3.14!",
    "Café, naïve, façade, élève.", "Le chat est sur le tapis.", "Zebra xylophone quiz?", "✓ unusual ☃ symbols",
    "A much longer sentence about a little girl who loved to play outside with her friends all day long.",
]  # fmt: skip


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    return train_tiny_spm(tmp_path_factory.mktemp("spm") / "spm.model")


@pytest.fixture(scope="module")
def tokenizer(spm_path):
    return build_sonar_tokenizer(spm_path)


def test_id_layout(tokenizer, spm_path):
    pieces = spm.SentencePieceProcessor(model_file=str(spm_path)).get_piece_size()
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert tokenizer.convert_tokens_to_ids("ace_Arab") == pieces + 1  # languages follow the pieces
    assert tokenizer.convert_tokens_to_ids("eng_Latn") == pieces + 1 + SONAR_LANGUAGES.index("eng_Latn")
    assert tokenizer.convert_tokens_to_ids("<mask>") == pieces + 1 + 202
    assert len(tokenizer) == pieces + 1 + 202 + 1
    assert SONAR_LANGUAGES.index("eng_Latn") == 46 and len(SONAR_LANGUAGES) == 202


def test_ids_equal_sentencepiece_plus_one(tokenizer, spm_path):
    """What fairseq2 computes: SentencePiece ids with the fairseq offset, `[lang] pieces </s>`."""
    sp = spm.SentencePieceProcessor(model_file=str(spm_path))
    lang = tokenizer.convert_tokens_to_ids("fra_Latn")
    for text in TEXTS:
        expected = [lang] + [i + 1 if i > 0 else 3 for i in sp.encode(text)] + [2]
        assert encode_source(tokenizer, [text], "fra_Latn")[0] == expected, text
        assert encode_target(tokenizer, [text], "fra_Latn")[0] == expected, text
    tokenizer.src_lang = "fra_Latn"
    try:
        for text in TEXTS:
            expected = [lang] + [i + 1 if i > 0 else 3 for i in sp.encode(text)] + [2]
            assert tokenizer(text)["input_ids"] == expected, text
    finally:
        tokenizer.src_lang = "eng_Latn"


def test_saved_folder_round_trips_without_remote_code(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, NllbTokenizer)
    for text in TEXTS:
        assert encode_source(loaded, [text], "eng_Latn") == encode_source(tokenizer, [text], "eng_Latn")
        assert loaded(text.strip())["input_ids"] == tokenizer(text)["input_ids"]
    loaded.tgt_lang = "fra_Latn"
    labels = loaded("x", text_target="Le chat.")["labels"]
    assert labels[0] == loaded.convert_tokens_to_ids("fra_Latn") and labels[-1] == 2


def test_decode_strips_specials_and_language_codes(tokenizer):
    ids = encode_target(tokenizer, ["The cat sat on the mat."], "eng_Latn")[0]
    assert decode_ids(tokenizer, [ids]) == ["The cat sat on the mat."]


def test_truncation_keeps_the_end_token(tokenizer):
    long_text = " ".join(["word"] * 400)
    with pytest.warns(UserWarning, match="1 source text.*truncated.*kept"):
        ids = encode_source(tokenizer, [long_text], "eng_Latn", max_length=50)[0]
    assert len(ids) == 50 and ids[0] == tokenizer.convert_tokens_to_ids("eng_Latn") and ids[-1] == 2


def test_unknown_language_names_the_closest_codes():
    assert check_language("deu_Latn") == "deu_Latn"
    with pytest.raises(ValueError, match="Did you mean: eng_Latn"):
        check_language("eng_latn")
    with pytest.raises(ValueError, match="fra_Latn"):
        check_language("french")


@pytest.mark.parametrize(
    "texts, error, message",
    [(None, TypeError, "string or a list"), ([""], ValueError, "Item 0 is empty"), (["ok", "   "], ValueError, "Item 1"),
     (["ok", 3], TypeError, "Item 1 is int")],
)  # fmt: skip
def test_bad_texts(texts, error, message):
    with pytest.raises(error, match=message):
        validate_texts(texts)


def test_suppressed_ids_cover_what_cannot_be_decoded(tokenizer):
    suppressed = suppressed_token_ids(tokenizer, len(tokenizer) + 2)
    assert 1 in suppressed and tokenizer.convert_tokens_to_ids("<mask>") in suppressed
    assert len(tokenizer) in suppressed and len(tokenizer) + 1 in suppressed
    assert 2 not in suppressed and 3 not in suppressed
