"""SONAR tokenization against SentencePiece itself: id layout, exact ids (source and target), decoding, saved folders
that reload without remote code, truncation, language codes, bad input, suppressed ids. Real objects only: a tiny
SentencePiece BPE model trained here in well under a second."""

import io
import json
import random
import warnings

import pytest
import sentencepiece as spm
from transformers import AutoTokenizer, NllbTokenizer
from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

from sonar_llm_hf.conversion.tokenizer import build_sonar_tokenizer
from sonar_llm_hf.models.tokenization_sonar import (
    SONAR_LANGUAGES,
    check_language,
    decode_ids,
    encode_source,
    encode_target,
    suppressed_token_ids,
    validate_texts,
)
from sonar_llm_hf.testing.tiny import train_tiny_spm

CORPUS = [
    "The cat sat on the mat.", "It was a happy day.", "A dog ran in the park.", "The sun was warm and bright.",
    "The dog found a red ball.", "He played outside all day.", "Tom had a small blue car.", "Lily liked books.",
    "Hello, my name is Paul.", "I'm working as a teacher.", "My name is SONAR.", "Where is the big tree?",
    "I can embed the sentences into vectorial space.", "Once upon a time, there was a little girl.",
    "She loved to play outside with her friends.", "Numbers like 42 and 3.14 are fine.", "What a lovely day!",
    "They went home and ate soup.", "The bird sang a song in the morning.", "We will meet at 10:30, won't we?",
    "Please close the door; it's cold.", "The children laughed (very loudly) at the clown.", "Is it 2026 already?",
    "Le chat est sur le tapis.", "Bonjour, mon nom est Paul.", "Je travaille comme professeur.",
    "Il fait beau aujourd'hui.", "La petite fille aime les fleurs.", "Nous allons à la plage demain.",
    "Où est la gare, s'il vous plaît ?", "C'est un garçon très gentil.", "Les élèves écoutent la maîtresse.",
    "Café, naïve, façade, élève, garçon.", "Il a mangé une pomme et une poire.", "Elle chante une chanson.",
    "Le soleil brille sur la mer.", "Mon frère joue au football.", "J'ai vingt-deux ans.", "Quelle belle journée !",
    "Ils sont partis à huit heures.", "Noël approche, et il neige déjà.", "Ça va très bien, merci.",
    "Le chien court dans le jardin.", "Fermez la fenêtre, s'il vous plaît.", "The old man walked slowly home.",
    "A quick brown fox jumps over the lazy dog.", "Rain fell softly on the roof.", "Everyone was asleep by nine.",
    "She wrote a long letter to her grandmother.", "Où sont mes clés ?",
]  # fmt: skip

TEXTS = CORPUS[:6] + [
    "  Leading and trailing spaces.  ", "Double  spaces   inside.", "Tabs\tand\nnewlines\r\nhere.",
    "Numbers 42, 3.14 and 2026!", "Punctuation: (a) [b] {c}; \"quotes\" -- dashes... ?!", "Café, naïve, élève.",
    "Où est la gare, s'il vous plaît ?", "Zebra xylophone quiz?", "✓ unusual ☃ symbols ☃☃", "中文 und 😀 emoji",
    "ﬁne ＡＢＣ ① ½ e\u0301 Å™…", "non\u00a0breaking\u3000spaces\u2002here", "zero\u200bwidth\ufeff joiners\u200b",
    "literal </s> and <s> and <unk> and <pad> and <mask> and eng_Latn and __fra_Latn__",
    "\u2581leading and \u2581\u2581inner \u2581 marks\u2581", "control\x07chars\x1f\x7f here", "ALL CAPS SENTENCE.",
    " ".join(CORPUS[10:20]),
]  # fmt: skip


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory):
    return train_tiny_spm(tmp_path_factory.mktemp("spm") / "spm.model", sentences=CORPUS, vocab_size=300)


@pytest.fixture(scope="session")
def sp(spm_path):
    return spm.SentencePieceProcessor(model_file=str(spm_path))


@pytest.fixture(scope="session")
def tokenizer(spm_path):
    return build_sonar_tokenizer(spm_path)


@pytest.fixture(scope="session")
def reloaded(tokenizer, tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved_tokenizer")
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder), folder


def fairseq2_ids(sp, tokenizer, text, lang):
    """fairseq2's NLLB tokenizer, in HF order: raw SentencePiece ids + 1 (its <unk>, 0, is HF 3)."""
    return [tokenizer.convert_tokens_to_ids(lang)] + [3 if i == 0 else i + 1 for i in sp.encode(text)] + [2]


def test_languages_are_nllbs_in_order():
    assert SONAR_LANGUAGES == tuple(FAIRSEQ_LANGUAGE_CODES) and len(SONAR_LANGUAGES) == 202
    assert SONAR_LANGUAGES.index("eng_Latn") == 46 and SONAR_LANGUAGES.index("fra_Latn") == 56


def test_id_layout(tokenizer, sp):
    n = sp.get_piece_size()
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    assert all(tokenizer.convert_ids_to_tokens(k + 1) == sp.id_to_piece(k) for k in range(3, n))
    assert tokenizer.convert_tokens_to_ids(list(SONAR_LANGUAGES)) == list(range(n + 1, n + 1 + 202))
    assert tokenizer.convert_tokens_to_ids("<mask>") == n + 203 and len(tokenizer) == n + 204
    assert tokenizer.legacy_behaviour is False and tokenizer.model_max_length == 514


def test_ids_equal_sentencepiece(tokenizer, reloaded, sp):
    for tok in (tokenizer, reloaded[0]):
        for text in TEXTS:
            for lang in ("eng_Latn", "fra_Latn"):
                expected = fairseq2_ids(sp, tok, text, lang)
                assert encode_source(tok, [text], lang)[0] == expected, text
                assert encode_target(tok, [text], lang)[0] == expected, text
        assert encode_source(tok, TEXTS, "deu_Latn") == [fairseq2_ids(sp, tok, t, "deu_Latn") for t in TEXTS]


def test_ids_equal_sentencepiece_on_random_strings(tokenizer, sp):
    rng = random.Random(0)
    pool = list("abcdefghijklmnopqrstuvwxyzTHELC0123456789 .,;:!?'\"-()éèàçêôïÉ") + [
        "  ", "\t", "\n", "\u00a0", "\u3000", "\u200b", "\u2581", "ﬁ", "①", "☃", "😀", "e\u0301", "</s>", "<mask>",
        "eng_Latn", "\x00", "\x85",
    ]  # fmt: skip
    texts = ["".join(rng.choice(pool) for _ in range(rng.randint(1, 30))) for _ in range(600)]
    texts = [t for t in texts if t.strip()]  # empty and whitespace-only texts are rejected (tested below)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # texts left empty by normalisation (tested below)
        ids = encode_source(tokenizer, texts, "eng_Latn")
    assert ids == [fairseq2_ids(sp, tokenizer, t, "eng_Latn") for t in texts]


def test_unknown_characters_are_one_unk_per_run(tokenizer, sp):
    ids = encode_source(tokenizer, ["☃☃ ☃"], "eng_Latn")[0]
    assert ids == fairseq2_ids(sp, tokenizer, "☃☃ ☃", "eng_Latn") and ids.count(3) == 2


def test_direct_tokenizer_calls(tokenizer, reloaded, sp):
    """Plain `NllbTokenizer` calls give `[lang] pieces </s>` on ordinary text, as source and as target (labels).

    Set `src_lang`/`tgt_lang` as attributes or in `from_pretrained`: transformers 5.24's `__call__` ignores them as
    keyword arguments."""
    folder = reloaded[1]
    configured = AutoTokenizer.from_pretrained(folder, src_lang="fra_Latn", tgt_lang="deu_Latn")
    for tok in (configured, tokenizer, reloaded[0]):
        if tok is not configured:
            tok.src_lang, tok.tgt_lang = "fra_Latn", "deu_Latn"
        try:
            for text in CORPUS:
                assert tok(text)["input_ids"] == fairseq2_ids(sp, tok, text, "fra_Latn")
                assert tok(text_target=text)["input_ids"] == fairseq2_ids(sp, tok, text, "deu_Latn")
            both = tok(CORPUS[0], text_target=CORPUS[1])
            assert both["input_ids"] == fairseq2_ids(sp, tok, CORPUS[0], "fra_Latn")
            assert both["labels"] == fairseq2_ids(sp, tok, CORPUS[1], "deu_Latn")
        finally:
            tok.src_lang, tok.tgt_lang = "eng_Latn", "eng_Latn"


def test_direct_calls_differ_only_as_documented(tokenizer, sp):
    """The module docstring's two exceptions: trailing whitespace and literal special strings."""
    tokenizer.src_lang = "eng_Latn"
    text = "The cat sat on the mat."
    assert tokenizer(text + " ")["input_ids"] == fairseq2_ids(sp, tokenizer, text, "eng_Latn")[:-1] + [
        tokenizer.convert_tokens_to_ids("\u2581"), 2
    ]  # fmt: skip
    assert 2 in tokenizer("a </s> b")["input_ids"][:-1]  # a special id; SentencePiece spells out "<", "/", "s", ">"
    assert 2 not in encode_source(tokenizer, ["a </s> b"], "eng_Latn")[0][:-1]


def test_saved_folder_reloads_without_remote_code(tokenizer, reloaded):
    loaded, folder = reloaded
    assert type(loaded) is NllbTokenizer and loaded.legacy_behaviour is False
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "NllbTokenizer" and "auto_map" not in config
    assert loaded.get_vocab() == tokenizer.get_vocab() and len(loaded) == len(tokenizer)
    assert loaded.all_special_ids == tokenizer.all_special_ids
    for text in TEXTS:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"], text
        ids = encode_target(loaded, [text])
        assert ids == encode_target(tokenizer, [text]) and decode_ids(loaded, ids) == decode_ids(tokenizer, ids)
    # saving the reloaded folder again changes nothing
    again = folder.parent / "again"
    loaded.save_pretrained(again)
    assert AutoTokenizer.from_pretrained(again).get_vocab() == tokenizer.get_vocab()


def test_decode_equals_sentencepiece(tokenizer, sp):
    for text in TEXTS:
        ids = encode_target(tokenizer, [text], "fra_Latn")[0]
        assert decode_ids(tokenizer, [ids]) == [sp.decode(sp.encode(text))], text
    text = "The cat sat on the mat."
    assert decode_ids(tokenizer, encode_source(tokenizer, [text])) == [text]


def as_sentencepiece(i: int, n: int) -> list[int]:
    """An HF id as SentencePiece sees it: <unk> 0, <s>/</s> its control ids 1/2; <pad>, languages, <mask> and extra
    model rows are fairseq2 control symbols the plain SentencePiece model lacks (they print nothing either way)."""
    if i in (0, 2, 3):
        return [{3: 0, 0: 1, 2: 2}[i]]
    return [i - 1] if 4 <= i < n - 203 else []


def test_decode_arbitrary_ids_like_sentencepiece(tokenizer, sp):
    """Generated ids can be anything: specials, <unk>, language codes, leading "▁" pieces, the model's extra rows."""
    rng = random.Random(1)
    n = len(tokenizer)
    for _ in range(400):
        ids = [rng.choice([0, 1, 2, 3, n - 1, n, n + 1, rng.randrange(n - 203, n)]) if rng.random() < 0.2
               else rng.randrange(4, n - 203) for _ in range(rng.randint(0, 12))]  # fmt: skip
        assert decode_ids(tokenizer, [ids]) == [sp.decode([j for i in ids for j in as_sentencepiece(i, n)])], ids
    space, the = tokenizer.convert_tokens_to_ids(["\u2581", "\u2581The"])
    assert decode_ids(tokenizer, [[2, 1, space, the, 3, space, 2]]) == [sp.decode([space - 1, the - 1, 0, space - 1])]
    assert decode_ids(tokenizer, [[3]]) == [" \u2047 "]  # fairseq2 prints <unk> as " ⁇ ", no stripping
    with pytest.raises(ValueError, match="Negative"):
        decode_ids(tokenizer, [[5, -100]])
    with pytest.raises(TypeError, match="batch of id sequences"):
        decode_ids(tokenizer, [5, 6])


def test_truncation_keeps_language_and_end_token(tokenizer, sp):
    long_text = " ".join(CORPUS)
    full = fairseq2_ids(sp, tokenizer, long_text, "eng_Latn")
    assert len(full) > 60
    with pytest.warns(UserWarning, match=r"1 of 2 source text\(s\) exceeded 60 tokens.*`</s>` was kept"):
        ids = encode_source(tokenizer, [long_text, "Short."], "eng_Latn", max_length=60)
    assert ids[0] == full[:59] + [2] and len(ids[0]) == 60
    assert ids[1] == fairseq2_ids(sp, tokenizer, "Short.", "eng_Latn")
    with pytest.warns(UserWarning, match="target"):
        assert encode_target(tokenizer, [long_text], "fra_Latn", max_length=20)[0][-1] == 2
    with pytest.raises(ValueError, match="max_length"):
        encode_source(tokenizer, ["Hello."], max_length=2)


def test_no_warning_within_the_limit(tokenizer, recwarn):
    encode_source(tokenizer, CORPUS, "eng_Latn")
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_language_codes():
    assert check_language("deu_Latn") == "deu_Latn"
    with pytest.raises(ValueError, match=r"Unknown language code 'eng_latn'\. Did you mean: eng_Latn\?"):
        check_language("eng_latn")
    with pytest.raises(ValueError, match="Did you mean: fra_Latn"):
        check_language("french")
    with pytest.raises(ValueError, match="Did you mean: .*zho_Hans"):
        check_language("zho")
    with pytest.raises(ValueError, match="Unknown language code None"):
        check_language(None)
    assert check_language("xx_Test", languages=["xx_Test"]) == "xx_Test"


def test_encoding_checks_the_language(tokenizer):
    with pytest.raises(ValueError, match="Did you mean: fra_Latn"):
        encode_source(tokenizer, ["Bonjour."], "fra_latn")


@pytest.mark.parametrize(
    "texts, error, message",
    [(None, TypeError, "string or a list"), (42, TypeError, "got int"), ([""], ValueError, "Item 0 is empty"),
     (["ok", "  \t\n"], ValueError, "Item 1 is empty or whitespace"), (["ok", 3], TypeError, "Item 1 is int"),
     (["ok", "fine", None], TypeError, "Item 2 is NoneType"), ([b"bytes"], TypeError, "Item 0 is bytes")],
)  # fmt: skip
def test_bad_texts(texts, error, message, tokenizer):
    with pytest.raises(error, match=message):
        validate_texts(texts)
    with pytest.raises(error, match=message):
        encode_source(tokenizer, texts)


def test_good_texts():
    assert validate_texts("One.") == ["One."]
    assert validate_texts(("One.", " Two ")) == ["One.", " Two "]


def test_texts_with_nothing_left_after_normalisation_encode_like_fairseq2(tokenizer, sp):
    assert sp.encode("\u200b\x07") == []  # SentencePiece deletes zero-width and control characters
    with pytest.warns(UserWarning, match=r"Target text\(s\) \[1\] hold no tokens"):
        ids = encode_target(tokenizer, ["Fine.", "\u200b\x07"], "fra_Latn")
    assert ids[1] == [tokenizer.convert_tokens_to_ids("fra_Latn"), 2]


def test_suppressed_ids(tokenizer):
    n = len(tokenizer)
    mask = tokenizer.convert_tokens_to_ids("<mask>")
    assert suppressed_token_ids(tokenizer, n + 2) == [0, 1, mask, n, n + 1]  # <s>, <pad>, <mask>, 2 extra rows
    assert suppressed_token_ids(tokenizer) == [0, 1, mask]
    assert suppressed_token_ids(tokenizer, 50) == [0, 1]  # a smaller model cannot emit the rest anyway


def test_vocabulary_is_sentencepiece_shifted_by_one(tokenizer, sp):
    """Piece k of the SentencePiece model is HF id k + 1 (fairseq's offset); languages and <mask> follow."""
    size = sp.get_piece_size()
    assert tokenizer.convert_ids_to_tokens(list(range(4, size + 1))) == [sp.id_to_piece(i) for i in range(3, size)]
    assert tokenizer.convert_tokens_to_ids(SONAR_LANGUAGES[0]) == size + 1
    assert tokenizer.convert_tokens_to_ids("<mask>") == size + 1 + len(SONAR_LANGUAGES) == len(tokenizer) - 1


def test_refuses_models_it_cannot_reproduce(tmp_path):
    unigram = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=unigram, vocab_size=120,
                                   model_type="unigram", hard_vocab_limit=False, minloglevel=2)  # fmt: skip
    (tmp_path / "unigram.model").write_bytes(unigram.getvalue())
    with pytest.raises(ValueError, match="model_type is 1"):
        build_sonar_tokenizer(tmp_path / "unigram.model")
    (tmp_path / "not.model").write_bytes(b"\xff\xff\xff")
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        build_sonar_tokenizer(tmp_path / "not.model")
