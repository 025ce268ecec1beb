"""One sentence splitter (sentencex) for prompts, training documents and the remote code, with SONAR's languages
mapped to its rules; a Hub user without it gets transformers' error naming the package, never another splitter."""

import subprocess
import sys

import datasets
import pytest
import sentencex

from sonar_llm_hf import split_sentences
from sonar_llm_hf.models.generation_sonar_llm import SENTENCEX_LANGUAGES, splitter_language
from sonar_llm_hf.models.tokenization_sonar import SONAR_LANGUAGES
from sonar_llm_hf.training.data import split_documents


# Swedish and Indonesian had no pysbd rules: they went through a punctuation regex that dropped closing quotes and
# split after every abbreviation.
@pytest.mark.parametrize("lang", ["eng_Latn", "swe_Latn", "ind_Latn"])
def test_closing_quotes_stay_with_their_sentence(lang):
    assert split_sentences('He said "hi." She left.', lang) == ['He said "hi."', "She left."]
    assert split_sentences("'Come here,' she said. 'Now.' He came.", lang) == [
        "'Come here,' she said.", "'Now.'", "He came."]  # fmt: skip


@pytest.mark.parametrize("lang", ["eng_Latn", "swe_Latn", "tgl_Latn"])
def test_no_split_after_titles_and_initials(lang):
    text = "Mr. Smith met Dr. Jones. J. K. Rowling wrote the books."
    assert split_sentences(text, lang) == ["Mr. Smith met Dr. Jones.", "J. K. Rowling wrote the books."]


@pytest.mark.parametrize(
    "lang, text, sentences",
    [
        ("yue_Hant", "我鍾意貓。佢唔鍾意狗！你呢？", ["我鍾意貓。", "佢唔鍾意狗！", "你呢？"]),  # never split before
        ("zho_Hans", "他说：“我明天回来。”然后他就走了。", ["他说：“我明天回来。”", "然后他就走了。"]),
        ("jpn_Jpan", "今日は晴れです。明日は雨でしょう。", ["今日は晴れです。", "明日は雨でしょう。"]),
    ],
)
def test_chinese_and_japanese_without_spaces(lang, text, sentences):
    assert split_sentences(text, lang) == sentences


def test_sonar_languages_use_sentencex_rules_where_it_has_them():
    text = "Pan Novák přišel v 10 hod. ráno. Řekl mi to."  # "hod." (hours) is in the Slovak rules
    assert splitter_language("ces_Latn") == "sk"  # sentencex's own fallback for Czech
    assert split_sentences(text, "ces_Latn") == ["Pan Novák přišel v 10 hod. ráno.", "Řekl mi to."]
    assert split_sentences(text, "eng_Latn") != split_sentences(text, "ces_Latn")
    # SONAR's als is Tosk Albanian; sentencex's "als" would mean Alemannic (German rules)
    assert splitter_language("als_Latn") == "en"
    prefixes = {code.split("_")[0] for code in SONAR_LANGUAGES}
    assert set(SENTENCEX_LANGUAGES) <= prefixes, set(SENTENCEX_LANGUAGES) - prefixes
    for code in SONAR_LANGUAGES:  # every language splits, with its rules or the default ones
        text = "Մեկ։ Երկու։" if code == "hye_Armn" else "One. Two!"  # Armenian ends sentences with "։"
        assert len(split_sentences(text, code)) == 2, code


def test_paragraphs_and_bad_input():
    assert split_sentences("The cat slept.\n\nThe next day, it was gone.") == [
        "The cat slept.", "The next day, it was gone."]  # fmt: skip
    assert split_sentences("   \n ") == []
    with pytest.raises(TypeError, match="Expected a string"):
        split_sentences(None)
    with pytest.raises(TypeError, match="SONAR language code"):
        split_sentences("Hi.", lang=None)


def test_prompts_and_training_documents_split_alike(sonar_llm):
    text = 'Tom said "hi." Mr. Brown waved. 我鍾意貓。佢唔鍾意狗！'
    out = sonar_llm.generate(text, num_beams=1, max_length=6, max_new_sentences=1)
    split_set = split_documents(datasets.Dataset.from_dict({"text": [text]}), eos_sentence=None)
    assert out.prompt_sentences[0] == split_set["sentences"][0] == split_sentences(text)
    assert len(out.prompt_sentences[0]) == 4


def test_remote_code_without_sentencex_names_the_package(tiny_sonar_llm_dir, tmp_path):
    """transformers' `check_imports` reads the modeling file of a local folder: without sentencex, loading stops with
    its message and `pip install` line (before: a regex split prompts silently, unlike training)."""
    code = f"""
import sys
class _Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("sentencex", "sonar_llm_hf"):
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, _Missing())
from transformers import AutoModel
try:
    AutoModel.from_pretrained({str(tiny_sonar_llm_dir)!r}, trust_remote_code=True)
except ImportError as error:
    print("ERROR", error)
"""
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "requires the following packages that were not found in your environment: sentencex" in result.stdout
    assert "pip install sentencex" in result.stdout


def test_sentencex_is_what_splits():
    text = "Dr. Müller kam um 10 Uhr. Er sagte z. B. nichts."
    assert split_sentences(text, "deu_Latn") == [p.strip() for p in sentencex.segment("de", text)]
