"""MTEB 2.x: the SONAR text encoder as an mteb model, each call embedding in the language the task says.

```python
import mteb
from sonar_llm_hf.integrations.mteb import SonarMTEBEncoder, sonar_subsets

model = SonarMTEBEncoder("sonar/encoder")          # a converted encoder folder or Hub repo
task = mteb.get_task("Tatoeba")
mteb.evaluate(model, mteb.get_task("Tatoeba", hf_subsets=sonar_subsets(task)))
```

SONAR needs the language of every text (its first token), and mteb gives it per call: `hf_subset` and the task's
`hf_subsets_to_langscripts` (`"eng-Latn"`), mapped to SONAR codes by `sonar_language` (macro-language codes to the
individual language SONAR was trained on: `ara` -> `arb_Arab`, `fas` -> `pes_Arab`, `cmn` -> `zho_Hans`, ...; a
language SONAR lacks is an error naming it). Bitext mining encodes its two columns in two calls with the same
`hf_subset`; mteb does not pass the column, so the wrapper reads it from the calling `BitextMiningEvaluator` (its
pair columns, `sentence1` first): each side gets its own language, and when the column cannot be found the call is
refused rather than guessed. Parallel bitext tasks (Flores) pass the language column itself as `hf_subset`. Other
subsets holding several languages (cross-lingual STS, mixed-language corpora) are refused too, unless `lang=` fixes
one language for every call; `sonar_subsets(task)` lists the subsets the wrapper can run. Do not evaluate a SONAR
sentence-transformers folder through mteb's generic `SentenceTransformerEncoderWrapper`: it never passes `lang`, so
every text would be embedded as English.
"""

from __future__ import annotations

import inspect
import re
import warnings

import numpy as np
from mteb.models import ModelMeta
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ScoringFunction

from ..models.modeling_sonar_text import SonarTextEncoder
from ..models.tokenization_sonar import SONAR_LANGUAGES, check_language

# ISO 639-3 macro-language (or other) code -> the individual language SONAR (NLLB-200) covers. A tuple key pins
# the script where the choice depends on it.
MACRO_LANGUAGES: dict[str | tuple[str, str], str] = {
    "ara": "arb",  # Arabic -> Modern Standard Arabic
    "fas": "pes",  # Persian -> Western Persian
    "per": "pes",
    "cmn": "zho",  # Mandarin -> SONAR's zho_Hans / zho_Hant
    "swa": "swh",  # Swahili -> Kiswahili
    "msa": "zsm",  # Malay -> Standard Malay
    "lav": "lvs",  # Latvian -> Standard Latvian
    "nor": "nob",  # Norwegian -> Bokmål
    "ekk": "est",  # Standard Estonian: SONAR's est_Latn
    "uzb": "uzn",  # Uzbek -> Northern Uzbek
    "mon": "khk",  # Mongolian -> Halh
    "orm": "gaz",  # Oromo -> West Central Oromo
    "pus": "pbt",  # Pashto -> Southern Pashto
    "sqi": "als",  # Albanian -> Tosk
    "mlg": "plt",  # Malagasy -> Plateau Malagasy
    "yid": "ydd",  # Yiddish -> Eastern Yiddish
    "que": "quy",  # Quechua -> Ayacucho Quechua
    "aym": "ayr",  # Aymara -> Central Aymara
    "nep": "npi",  # Nepali (macro) -> Nepali
    "ori": "ory",  # Oriya (macro) -> Odia
    "kau": "knc",  # Kanuri -> Central Kanuri
    ("aze", "Latn"): "azj",  # Azerbaijani: North (Latin), South (Arabic)
    ("aze", "Arab"): "azb",
    ("kur", "Latn"): "kmr",  # Kurdish: Kurmanji (Latin), Sorani (Arabic)
    ("kur", "Arab"): "ckb",
}

SONAR_CITATION = """@misc{Duquenne:2023:sonar_arxiv,
  author = {Paul-Ambroise Duquenne and Holger Schwenk and Benoit Sagot},
  title = {{SONAR:} Sentence-Level Multimodal and Language-Agnostic Representations},
  publisher = {arXiv},
  year = {2023},
  url = {https://arxiv.org/abs/2308.11466},
}"""

# mteb's spelling ("eng-Latn") of SONAR's 202 languages.
SONAR_MTEB_LANGUAGES = sorted(code.replace("_", "-") for code in SONAR_LANGUAGES)
_CODE = re.compile(r"([a-z]{3})[-_]([A-Z][a-z]{3})")


def sonar_language(code: str) -> str:
    """The SONAR code of an mteb language-script code: "eng-Latn" -> "eng_Latn", "cmn-Hans" -> "zho_Hans".

    Raises a `ValueError` naming the code when it is not language-script shaped or SONAR has no such language.
    """
    match = _CODE.fullmatch(code) if isinstance(code, str) else None
    if match is None:
        raise ValueError(f"Cannot read {code!r} as a language-script code such as 'eng-Latn' or 'eng_Latn'.")
    lang, script = match.groups()
    for candidate in (lang, MACRO_LANGUAGES.get((lang, script)), MACRO_LANGUAGES.get(lang)):
        if candidate and f"{candidate}_{script}" in SONAR_LANGUAGES:
            return f"{candidate}_{script}"
    same_language = [c for c in SONAR_LANGUAGES if c.startswith(f"{MACRO_LANGUAGES.get(lang, lang)}_")]
    hint = f" SONAR has {', '.join(same_language)}." if same_language else ""
    raise ValueError(
        f"SONAR has no language for {code!r}: it is not one of SONAR's {len(SONAR_LANGUAGES)} languages "
        f"(`SONAR_LANGUAGES`), nor a macro-language code in `MACRO_LANGUAGES`.{hint} Pass `lang=` to the wrapper to "
        "embed this task in a language of your choice."
    )


def sonar_model_meta(name: str = "facebook/SONAR", revision: str | None = None) -> ModelMeta:
    """mteb metadata of the SONAR text encoder (`SonarTextEncoder`, converted from Meta's released weights).

    `name` and `revision` label the results (default: mteb's name for SONAR); the weights are CC-BY-NC-4.0.
    """
    return ModelMeta(
        loader=SonarMTEBEncoder,
        name=name,
        revision=revision,
        release_date="2023-08-22",
        languages=SONAR_MTEB_LANGUAGES,
        n_parameters=766_091_264,  # 24 layers of d 1024, FFN 8192, and the 256,206 x 1024 embedding
        n_embedding_parameters=262_354_944,
        memory_usage_mb=2922,  # fp32
        max_tokens=512,  # 514 positions: 512 tokens plus fairseq2's legacy offset
        embed_dim=1024,
        license="cc-by-nc-4.0",
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Sentence Transformers"],
        reference="https://github.com/facebookresearch/SONAR",
        similarity_fn_name=ScoringFunction.COSINE,
        use_instructions=False,  # it takes a language code, which the wrapper reads from the task
        training_datasets=set(),
        citation=SONAR_CITATION,
    )


class SonarMTEBEncoder(AbsEncoder):
    """An mteb encoder over `SonarTextEncoder.encode`, in the language each task names (see the module docstring).

    Args:
        model: a converted encoder folder or Hub repo, or a loaded `SonarTextEncoder` (with its tokenizer).
        revision: the Hub revision to load (and to label results with).
        device: where to run ("cpu", "cuda", ...); default: where the model is.
        lang: one SONAR code for every call, instead of the task's languages.
        model_meta: the metadata results are filed under (default `sonar_model_meta()`, name "facebook/SONAR").
        **kwargs: `from_pretrained` options (`dtype`, `token`, ...).

    Example:

    ```python
    >>> import mteb
    >>> model = SonarMTEBEncoder("sonar/encoder", device="cuda")
    >>> mteb.evaluate(model, mteb.get_task("FloresBitextMining", hf_subsets=["eng_Latn-fra_Latn"]))
    ```
    """

    def __init__(self, model, revision: str | None = None, device: str | None = None, *, lang: str | None = None,
                 model_meta: ModelMeta | None = None, **kwargs):  # fmt: skip
        if isinstance(model, SonarTextEncoder):
            self.model = model
        else:
            self.model = SonarTextEncoder.from_pretrained(model, revision=revision, **kwargs)
        self.model.eval()
        if device is not None:
            self.model.to(device)
        self.lang = check_language(lang) if lang is not None else None
        self.mteb_model_meta = model_meta or sonar_model_meta(revision=revision)

    def encode(
        self, inputs, *, task_metadata, hf_split: str, hf_subset: str, prompt_type=None, **kwargs
    ) -> np.ndarray:
        """(N, d) float32 embeddings of the texts of `inputs`, in order, in the language of this call."""
        lang = self.language_for(task_metadata, hf_subset)
        texts = [text for batch in inputs for text in batch["text"]]
        if not texts:
            return np.zeros((0, self.model.config.d_model), dtype=np.float32)
        empty = [index for index, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
        if empty:  # fairseq2 embeds an empty text as `[lang] </s>`; SonarTextEncoder.encode refuses it
            warnings.warn(
                f"{len(empty)} of {len(texts)} texts of {task_metadata.name} ({hf_subset}/{hf_split}) are empty; they "
                "are embedded as `[lang] </s>`, as fairseq2 does.",
                UserWarning,
                stacklevel=2,
            )
        options = {
            "lang": lang,
            "batch_size": kwargs.get("batch_size", 32),
            "progress_bar": kwargs.get("show_progress_bar"),
        }
        result = np.empty((len(texts), self.model.config.d_model), dtype=np.float32)
        skipped = set(empty)
        filled = [index for index in range(len(texts)) if index not in skipped]
        if filled:
            result[filled] = self.model.encode([texts[i] for i in filled], **options).float().cpu().numpy()
        if empty:
            tokenizer = self.model._tokenizer_or_raise()
            ids = [tokenizer.convert_tokens_to_ids(lang), tokenizer.convert_tokens_to_ids("</s>")]
            result[empty] = self.model.encode_token_ids([ids]).float().cpu().numpy()
        return result

    def language_for(self, task_metadata, hf_subset: str) -> str:
        """The SONAR language of this call: `lang` if fixed, else the subset's (this column's, in bitext mining)."""
        if self.lang is not None:
            return self.lang
        scripts = task_metadata.hf_subsets_to_langscripts
        codes = list(scripts[hf_subset]) if hf_subset in scripts else [hf_subset]  # parallel bitext: a column
        languages = list(dict.fromkeys(sonar_language(code) for code in codes))
        if len(languages) == 1:
            return languages[0]
        side = _bitext_column_side() if task_metadata.type == "BitextMining" and len(codes) == 2 else None
        if side is not None:
            return sonar_language(codes[side])
        raise ValueError(
            f"Subset {hf_subset!r} of {task_metadata.name} holds {len(languages)} languages ({', '.join(languages)}) "
            "and mteb does not say which one this call embeds; SONAR needs one language per call. Pass `lang=` to "
            "SonarMTEBEncoder to embed it in one language, or leave this subset out."
        )


def sonar_subsets(task) -> list[str]:
    """The `hf_subsets` of an mteb task that `SonarMTEBEncoder` can embed: each language is SONAR's (directly or as
    a macro-language) and the subset is monolingual or a bitext pair.

    `mteb.get_task("Tatoeba", hf_subsets=sonar_subsets(mteb.get_task("Tatoeba")))` keeps those (Tatoeba also holds
    languages SONAR was not trained on, such as Latin or Interlingua, whose subsets would stop the run).
    """
    metadata = task.metadata
    kept = []
    for subset in task.hf_subsets:
        codes = metadata.hf_subsets_to_langscripts.get(subset, [subset])
        try:
            languages = {sonar_language(code) for code in codes}
        except ValueError:
            continue
        if len(languages) == 1 or (metadata.type == "BitextMining" and len(codes) == 2):
            kept.append(subset)
    return kept


def _bitext_column_side() -> int | None:
    """0 or 1: which column of its pair the calling `BitextMiningEvaluator` is embedding (None if not called by one).

    mteb 2.x encodes each pair column in its own call, naming the column only in the evaluator's local `sub`.
    """
    from mteb._evaluators.text.bitext_mining_evaluator import BitextMiningEvaluator

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, BitextMiningEvaluator):
                column = frame.f_locals.get("sub")
                sides = {pair.index(column) for pair in owner.pairs if column in pair}
                return sides.pop() if len(sides) == 1 else None
            frame = frame.f_back
        return None
    finally:
        del frame


__all__ = [
    "MACRO_LANGUAGES",
    "SONAR_MTEB_LANGUAGES",
    "SonarMTEBEncoder",
    "sonar_language",
    "sonar_model_meta",
    "sonar_subsets",
]
