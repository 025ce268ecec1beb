"""Sentence-level generation for SONAR-LLM.

The reference loop (`generate.py` of FusionBrainLab/SONAR-LLM) handles one prompt at a time and recomputes the whole
backbone every sentence. This one keeps the backbone's KV cache across sentence steps, batches many prompts of
different lengths (left padding, positions from the mask), decodes and re-encodes all active documents in one SONAR
call per step, and stops each document on its own. Its defaults reproduce the reference:

1. embed the prompt sentences (plus "Begin of text." when the model was trained with it)
2. predict the next embedding from the last position
3. decode it with SONAR beam search (beam 5, 256 positions)
4. re-encode the decoded sentence; stop when its cosine to enc("End of sequence.") is >= 0.98
5. otherwise feed the re-encoded embedding back, while the document holds at most `max_sentences` sentences
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import warnings
from dataclasses import dataclass, field
from numbers import Real

import sentencex
import torch
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from .configuration_sonar_text import check_bool, check_decoding, check_integer, check_sampling
from .tokenization_sonar import check_language, encode_source, execution_device

# Offline sentence splitting for SONAR-LLM: one splitter for prompts, training documents and evaluation. It lives
# here, beside the loop that splits prompts, so that SONAR encoder and decoder folders never need the splitter.
#
# The reference uses NLTK's punkt, which needs a download. We use sentencex (Wikimedia's rule-based splitter: its
# rules are compiled into its wheel, and its language fallbacks cover ~300 languages). It is imported plainly, so
# that remote code run without it fails with transformers' "requires the following packages ... Run `pip install
# sentencex`" instead of silently splitting differently from training.

# SONAR language (ISO 639-3 prefix) -> the sentencex language whose rules apply: its own, or the one that
# sentencex's fallback table gives (Catalan for Occitan, Slovak for Czech, Portuguese for Galician, ...). Every other
# language gets sentencex's default rules (English abbreviations; `.`, `!`, `?` and the stops of other scripts:
# 。！？ । ؟ ። ...). The table is explicit rather than ISO 639-1 codes passed through, because codes collide: SONAR's
# `als` is Tosk Albanian, sentencex's `als` is Alemannic (German rules).
SENTENCEX_LANGUAGES = {
    "eng": "en", "amh": "am", "bul": "bg", "ben": "bn", "cat": "ca", "oci": "ca", "dan": "da", "deu": "de",
    "ltz": "de", "ell": "el", "spa": "es", "ast": "es", "quy": "es", "fin": "fi", "fra": "fr", "fon": "fr",
    "hat": "fr", "kab": "fr", "kbp": "fr", "lin": "fr", "lua": "fr", "plt": "fr", "sag": "fr", "wol": "fr",
    "guj": "gu", "hin": "hi", "awa": "hi", "mag": "hi", "mai": "hi", "san": "hi", "hye": "hy", "ita": "it",
    "fur": "it", "lij": "it", "lmo": "it", "scn": "it", "vec": "it", "jpn": "ja", "kaz": "kk", "kan": "kn",
    "mal": "ml", "mar": "mr", "mya": "my", "nld": "nl", "lim": "nl", "pan": "pa", "pol": "pl", "szl": "pl",
    "por": "pt", "glg": "pt", "kea": "pt", "rus": "ru", "tat": "ru", "slk": "sk", "ces": "sk", "tam": "ta",
    "tel": "te", "ukr": "uk", "arb": "ar", "ars": "ar", "acm": "ar", "acq": "ar", "aeb": "ar", "ajp": "ar",
    "apc": "ar", "ary": "ar", "arz": "ar",
}  # fmt: skip
DEFAULT_SPLITTER_LANGUAGE = "en"


def splitter_language(lang: str) -> str:
    """The sentencex language code used for a SONAR language code (`"deu_Latn"` -> `"de"`)."""
    return SENTENCEX_LANGUAGES.get(lang.split("_")[0], DEFAULT_SPLITTER_LANGUAGE)


def split_sentences(text: str, lang: str = "eng_Latn") -> list[str]:
    """Split a document into stripped, non-empty sentences (sentencex, with the rules of `lang`)."""
    if not isinstance(text, str):
        raise TypeError(f"Expected a string to split into sentences, got {type(text).__name__}.")
    if not isinstance(lang, str):
        raise TypeError(f"`lang` must be a SONAR language code such as 'eng_Latn', got {type(lang).__name__}.")
    pieces = sentencex.segment(splitter_language(lang), text)
    return [piece.strip() for piece in pieces if piece.strip()]


# Sentence-level controls of SONAR-LLM's `generate`: repetition, a minimum length, and latent sampling.
#
# None of them is in the reference loop, and all are off by default, so a converted model reproduces it unless the
# user opts in (`model.generation_config`, `generate(...)` keywords or the CLI flags):
#
# - `repetition_threshold`: a generated sentence *repeats* when its text equals, or its embedding has cosine >=
#   the threshold with, ANY earlier sentence of the continuation (not only the previous one, as LCM's
#   `stop_on_repetition_cosine_threshold` does, and never a prompt sentence). The embedding compared is the
#   re-encoded sentence (the reference's `eos_check`/`feedback`), or the latent that was decoded when nothing is
#   re-encoded. `repetition_action="stop"` ends the document before the repeat; `"avoid"` re-decodes (below).
# - `min_new_sentences`: before this many sentences, the end sentence is avoided (re-decoded) rather than accepted;
#   LCM's `min_gen_len`. The caps win: `max_new_sentences=1` still stops after one sentence (a model that saves
#   `min_new_sentences=2` must not refuse a call that asks for one sentence).
# - `avoid_special_sentences`: the begin and end sentences ("Begin of text.", "End of sequence.") are never kept as
#   story sentences (they are avoided; they appear when the end check compares predictions, not re-decoded text).
# - `latent_temperature` / `latent_top_p`: the prediction is moved by Gaussian noise before decoding (the latent
#   sampling of LCM's `lcm_temperature` and of the SONAR-LLM authors' loader). The noise of a row is
#   `latent_temperature * rms(prediction) * z`, with z standard normal, so its norm is about `latent_temperature`
#   times the prediction's: 0.1 moves it by ~10%. `latent_top_p` draws z from the Gaussian's highest-density region
#   of mass p (a ball, since the density falls with |z|), the continuous counterpart of nucleus sampling. In d
#   dimensions nearly all the mass lies in a thin shell of radius ~sqrt(d), so it only trims the largest draws (at
#   d=1024, p=0.5 caps |z| at 1.00 sqrt(d) where p=1 reaches ~1.1 sqrt(d)); it is there for parity, not diversity.
#
# *Avoiding* a sentence re-decodes the same prediction with fresh latent noise, at temperature
# `latent_temperature + k * avoid_temperature` for attempt k = 1..`avoid_attempts` (one SONAR decode and re-encode
# per attempt, batched over the documents that need one), and keeps the first sentence that is acceptable. When every
# attempt fails, a too-early end ends the document (it has fewer than `min_new_sentences`), and a repeat or special
# sentence stops it (`stop_reasons` says which). Noise is drawn from torch's RNG: pass `seed` for reproducible output.

# Options of these controls and their defaults, which reproduce the reference loop (nothing compared, no noise).
CONTROL_DEFAULTS = dict(
    min_new_sentences=0,  # the end sentence is avoided before this many generated sentences (LCM's min_gen_len)
    repetition_threshold=None,  # cosine to any earlier continuation sentence that counts as a repeat; None: off
    repetition_action="stop",  # "stop" the document before a repeat, or "avoid" it by re-decoding
    avoid_special_sentences=False,  # never keep "Begin of text." / "End of sequence." as a story sentence
    avoid_attempts=8,  # re-decodes tried for a sentence to avoid
    avoid_temperature=0.1,  # latent temperature added per attempt (attempt k: latent_temperature + k * this)
    latent_temperature=0.0,  # Gaussian noise on the prediction before decoding, relative to its rms; 0: off
    latent_top_p=1.0,  # highest-density mass of the noise that is drawn from; 1: the whole Gaussian
)
REPETITION_ACTIONS = ("stop", "avoid")


def _check_real(name: str, value, low: float, high: float | None, low_open: bool = False, hint: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"`{name}` must be a finite number, got {value!r}.{hint}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        upper = f"{high}]" if high is not None else "inf)"
        interval = f"{'(' if low_open else '['}{low}, {upper}"
        raise ValueError(f"`{name}` must lie in {interval}, got {value}.{hint}")


def check_control_options(options: dict) -> None:
    """Refuse values that would fail late or silently mean something else, naming the option."""
    check_integer("min_new_sentences", options["min_new_sentences"], 0,
                  hint=" 0 accepts the end sentence at once (the reference).")  # fmt: skip
    threshold = options["repetition_threshold"]
    if threshold is not None:
        _check_real("repetition_threshold", threshold, -1.0, 1.0, hint=" It is a cosine; None turns the check off.")
    if options["repetition_action"] not in REPETITION_ACTIONS:
        raise ValueError(f"`repetition_action` must be 'stop' or 'avoid', got {options['repetition_action']!r}.")
    check_bool("avoid_special_sentences", options["avoid_special_sentences"])
    check_integer("avoid_attempts", options["avoid_attempts"], 0, hint=" 0 never re-decodes.")
    _check_real("avoid_temperature", options["avoid_temperature"], 0.0, None, low_open=True)
    _check_real("latent_temperature", options["latent_temperature"], 0.0, None, hint=" 0 turns latent noise off.")
    _check_real("latent_top_p", options["latent_top_p"], 0.0, 1.0, low_open=True, hint=" 1 keeps the whole Gaussian.")


def _chi2_quantile(probabilities: torch.Tensor, dim: int) -> torch.Tensor:
    """Quantiles of the chi-square distribution with `dim` degrees of freedom, by bisection of its CDF."""
    low = torch.zeros_like(probabilities, dtype=torch.float64)
    high = torch.full_like(low, dim + 20 * math.sqrt(2 * dim) + 50)  # far beyond any quantile below 1 - 1e-40
    half = torch.tensor(dim / 2, dtype=torch.float64, device=low.device)
    for _ in range(80):
        middle = (low + high) / 2
        below = torch.special.gammainc(half, middle / 2) < probabilities
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return (low + high) / 2


def latent_noise(predicted: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """Noise for (n, d) predictions: `temperature * rms(row) * z`, z standard normal (or, for top_p < 1, drawn from
    its highest-density ball of mass top_p: a uniform direction and a radius from the truncated chi distribution)."""
    rows, dim = predicted.shape
    z = torch.randn(rows, dim, device=predicted.device, dtype=torch.float32)  # (n, d)
    if top_p < 1.0:
        u = torch.rand(rows, device=predicted.device, dtype=torch.float64)
        radius = _chi2_quantile(u * top_p, dim).sqrt().to(torch.float32)  # (n,)
        z = z / z.norm(dim=-1, keepdim=True) * radius.unsqueeze(-1)
    rms = predicted.float().norm(dim=-1, keepdim=True) / math.sqrt(dim)  # (n, 1)
    return temperature * rms * z


def sample_latent(predicted: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """The prediction moved by latent noise (unchanged, and no random number drawn, at temperature 0)."""
    if temperature == 0:
        return predicted
    return (predicted.float() + latent_noise(predicted, temperature, top_p)).to(predicted.dtype)


class ContinuationHistory:
    """The sentences a document has generated so far, as texts and as the embeddings that repetition compares."""

    def __init__(self):
        self.texts: list[str] = []
        self.embeddings: list[torch.Tensor] = []

    def add(self, text: str, embedding: torch.Tensor) -> None:
        self.texts.append(text.strip())
        self.embeddings.append(embedding.detach().float())

    def repeats(self, text: str, embedding: torch.Tensor, threshold: float) -> bool:
        """Same text as, or cosine >= threshold with, any earlier sentence of the continuation."""
        if not self.texts:
            return False
        if text.strip() in self.texts:
            return True
        earlier = torch.stack(self.embeddings).to(embedding.device)  # (k, d)
        cosine = torch.nn.functional.cosine_similarity(earlier, embedding.float().unsqueeze(0), dim=-1)  # (k,)
        return bool(cosine.max() >= threshold)


def judge_sentence(text: str, embedding: torch.Tensor, is_end: bool, history: ContinuationHistory, options: dict,
                   special_texts: tuple[str, ...]) -> str:  # fmt: skip
    """What to do with a decoded sentence: "end", "accept", "stop" (a repeat under action "stop"), or one of
    the reasons to avoid it: "early_end", "special", "repeat"."""
    if is_end:
        return "end" if len(history.texts) >= options["min_new_sentences"] else "early_end"
    if options["avoid_special_sentences"] and text.strip() in special_texts:
        return "special"
    threshold = options["repetition_threshold"]
    if threshold is not None and history.repeats(text, embedding, threshold):
        return "repeat" if options["repetition_action"] == "avoid" else "stop"
    return "accept"


AVOIDED = ("early_end", "special", "repeat")
# How a verdict other than "accept" ends a document, as (finished, stop reason); the avoided ones, once every
# attempt to avoid them failed.
STOP_OUTCOMES = {"end": (True, "end"), "stop": (False, "repetition"), "early_end": (True, "end"),
                 "special": (False, "special_sentence"), "repeat": (False, "repetition")}  # fmt: skip


def draws_latent_noise(options: dict) -> bool:
    """Whether generation draws latent noise (so `seed` matters without `do_sample`): latent sampling, or a control
    that re-decodes an avoided sentence with fresh noise."""
    avoids_repeats = options.get("repetition_threshold") is not None and options.get("repetition_action") == "avoid"
    return bool(options.get("latent_temperature", 0.0) > 0 or options.get("min_new_sentences", 0) > 0
                or options.get("avoid_special_sentences") or avoids_repeats)  # fmt: skip


def avoid_temperature(options: dict, attempt: int) -> float:
    return options["latent_temperature"] + attempt * options["avoid_temperature"]


# Every option of `SonarLLMForCausalSentenceModeling.generate`, with the reference loop's values. They are stored in
# the model's `GenerationConfig` (unknown keys round-trip through generation_config.json).
DEFAULT_SENTENCE_GENERATION = dict(
    max_sentences=32,  # continue while the document holds <= 32 sentences (the reference's `while len(sents) <= 32`)
    max_new_sentences=None,  # optional cap on generated sentences per document
    eos_threshold=0.98,  # cosine to the end sentence's embedding that ends a document
    eos_check="reencoded",  # "reencoded" (reference) or "predicted": which embedding is compared to the end sentence
    feedback="reencoded",  # "reencoded" (reference) or "predicted": which embedding is fed back to the backbone
    num_beams=5,  # SONAR decoder beam size
    max_length=256,  # SONAR decoder positions per sentence, the `[</s>, lang]` prompt included
    do_sample=False,  # sample in the SONAR decoder instead of beam search
    temperature=1.0,
    top_p=1.0,
    top_k=None,
    prompt_lang=None,  # defaults to config.default_lang
    target_lang=None,  # defaults to the prompt language: prompt in French, continue in German
    add_begin=None,  # defaults to config.add_begin
    seed=None,  # seeds sampling and latent noise, without touching the global RNG
    batch_size=64,  # documents decoded / re-encoded per SONAR call
    use_cache=True,  # the backbone's KV cache across sentence steps
    **CONTROL_DEFAULTS,  # repetition, minimum length and latent sampling: off (see generation_sonar_llm.py)
)


@dataclass
class SonarLLMGenerateOutput:
    """What `generate` returns, one entry per prompt.

    Attributes:
        sentences: the generated sentences.
        texts: the generated sentences joined with spaces.
        embeddings: the embeddings fed back after each generated sentence, (n_i, d).
        predicted_embeddings: the backbone's raw predictions, (n_i, d).
        prompt_sentences: the prompt's sentences (empty for embedding prompts).
        full_texts: prompt and continuation joined, as the reference prints them.
        finished: whether the document ended on the end sentence (False: it hit a length limit or was stopped).
        stop_reasons: why each document stopped: "end", "max_sentences", "max_new_sentences", "repetition" (a
            repeat under `repetition_action="stop"`, or one that could not be avoided) or "special_sentence".
    """

    sentences: list[list[str]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    embeddings: list[torch.Tensor] = field(default_factory=list)
    predicted_embeddings: list[torch.Tensor] = field(default_factory=list)
    prompt_sentences: list[list[str]] = field(default_factory=list)
    full_texts: list[str] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    stop_reasons: list[str | None] = field(default_factory=list)


class SentenceStreamer(BaseStreamer):
    """Receives sentences as they are produced: `put([(prompt_index, sentence), ...])` once per step, then `end()`."""

    def put(self, value: list[tuple[int, str]]) -> None:
        raise NotImplementedError

    def end(self) -> None:
        pass


class PrintSentenceStreamer(SentenceStreamer):
    """Prints each sentence as soon as it is decoded (prefixed by its prompt index when there are several)."""

    def __init__(self, num_prompts: int = 1, stream=None):
        self.num_prompts = num_prompts
        self.stream = stream or sys.stdout

    def put(self, value: list[tuple[int, str]]) -> None:
        for index, sentence in value:
            prefix = f"[{index}] " if self.num_prompts > 1 else ""
            print(prefix + sentence, file=self.stream, flush=True)

    def end(self) -> None:
        self.stream.flush()


# Entries of a `GenerationConfig` that are bookkeeping, not generation settings.
_CONFIG_BOOKKEEPING = {"transformers_version", "_from_model_config", "_commit_hash", "_original_object_hash"}
_OPTION_HINT = (
    " SONAR-LLM generates sentences: `max_new_sentences` caps sentences per document, `max_length` tokens per"
    " sentence."
)


def merge_generation_options(saved: GenerationConfig | None, passed: GenerationConfig | None = None, **overrides):
    """The options of one `generate` call, merged as transformers' `generate` merges them: a passed
    `GenerationConfig` overrides the saved `model.generation_config` only where it sets a value (not None, through
    `GenerationConfig.update(defaults_only=True)`, as `GenerationMixin` does), keyword overrides win over both, and
    `DEFAULT_SENTENCE_GENERATION` fills what neither sets. Unknown keywords are an error; settings of the passed
    config that sentence generation does not use (`repetition_penalty`, `max_new_tokens`, ...) get a warning."""
    unknown = sorted(set(overrides) - set(DEFAULT_SENTENCE_GENERATION) - {"tokenizer", "lang"})
    if unknown:
        raise TypeError(
            f"Unknown generation option(s) {unknown}; `generate` takes {', '.join(DEFAULT_SENTENCE_GENERATION)}, "
            f"`lang` (an alias of `prompt_lang`), `tokenizer` and `streamer`.{_OPTION_HINT}"
        )
    if passed is not None and not isinstance(passed, GenerationConfig):
        raise TypeError(f"`generation_config` must be a transformers `GenerationConfig`, got {type(passed).__name__}.")
    if "lang" in overrides and overrides.get("prompt_lang") not in (None, overrides["lang"]):
        raise ValueError(
            f"`lang` ({overrides['lang']!r}) and `prompt_lang` ({overrides['prompt_lang']!r}) disagree; pass one."
        )
    merged = copy.deepcopy(passed) if passed is not None else GenerationConfig()
    if passed is not None:
        unused = sorted(set(passed.to_diff_dict()) - set(DEFAULT_SENTENCE_GENERATION) - _CONFIG_BOOKKEEPING)
        if unused:
            warnings.warn(
                f"`generation_config` sets {unused}, which sentence generation does not use; they are "
                f"ignored.{_OPTION_HINT}",
                UserWarning,
                stacklevel=3,
            )
    if saved is not None:
        merged.update(**saved.to_dict(), defaults_only=True, allow_custom_entries=True)
    options = {key: getattr(merged, key, None) for key in DEFAULT_SENTENCE_GENERATION}
    options = {key: DEFAULT_SENTENCE_GENERATION[key] if value is None else value for key, value in options.items()}
    if "lang" in overrides:
        overrides["prompt_lang"] = overrides.pop("lang")
    options.update(overrides)
    user_set = set(overrides) | (set(passed.to_diff_dict()) if passed is not None else set())
    warn_ignored_sampling_options(options, user_set)
    return options


# Options that only sampling reads, with the values that change nothing.
_SAMPLING_ONLY = {"temperature": 1.0, "top_p": 1.0, "top_k": None, "seed": None}


def warn_ignored_sampling_options(options: dict, user_set: set) -> None:
    """`GenerationConfig.validate`'s rule for sampling flags without `do_sample=True`: they are ignored, with a
    warning, unless the caller set `do_sample=False` explicitly and the flag was only inherited from the saved
    `generation_config` (transformers' `user_set_attributes`). Beams with `do_sample=True` are beam sampling, as
    in transformers, so `num_beams` is never overridden."""
    if options["do_sample"] is True:
        return
    # an invalid value is an error first (it would be refused later anyway), never only "ignored"
    check_sampling(**{name: options[name] for name in ("temperature", "top_p", "top_k")})
    check_integer("seed", options["seed"], -(2**63), allow_none=True)
    latent_noise = draws_latent_noise(options)
    ignored = [name for name, neutral in _SAMPLING_ONLY.items() if options[name] != neutral
               and (name in user_set or "do_sample" not in user_set)
               and not (name == "seed" and latent_noise)]  # fmt: skip  # the seed also seeds latent noise
    if ignored:
        settings = ", ".join(f"`{name}={options[name]!r}`" for name in ignored)
        warnings.warn(
            f"`do_sample` is not True, so {settings} {'is' if len(ignored) == 1 else 'are'} ignored: these options "
            "are only used when sampling. Pass `do_sample=True`, or leave them unset.",
            UserWarning,
            stacklevel=3,
        )


def check_generation_options(options: dict, decoder_positions: int) -> None:
    """Refuse every option value that would fail late or silently mean something else, naming it."""
    check_integer("max_sentences", options["max_sentences"], 1, hint=" A document grows while it holds <= this many.")
    check_integer("max_new_sentences", options["max_new_sentences"], 1, allow_none=True,
                  hint=" None: no cap besides `max_sentences`.")  # fmt: skip
    check_decoding(options["num_beams"], options["max_length"], decoder_positions, options["batch_size"],
                   options["do_sample"], temperature=options["temperature"], top_p=options["top_p"],
                   top_k=options["top_k"])  # fmt: skip
    threshold = options["eos_threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not -1.0 <= float(threshold) <= 1.0:
        raise ValueError(f"`eos_threshold` is a cosine and must lie in [-1, 1], got {threshold!r}.")
    for name in ("eos_check", "feedback"):
        if options[name] not in ("reencoded", "predicted"):
            raise ValueError(f"`{name}` must be 'reencoded' or 'predicted', got {options[name]!r}.")
    check_bool("use_cache", options["use_cache"])
    check_bool("add_begin", options["add_begin"], allow_none=True)
    check_integer("seed", options["seed"], -(2**63), allow_none=True)
    check_control_options(options)


def _check_prompt_lengths(lengths: list[int], max_sentences: int, begin: bool) -> None:
    """A prompt already longer than `max_sentences` would silently come back with nothing generated."""
    for i, length in enumerate(lengths):
        if length > max_sentences:
            held = f"{length} sentences" + (" (the begin sentence included)" if begin else "")
            raise ValueError(
                f"Prompt {i} already holds {held}, more than `max_sentences={max_sentences}`; a document grows only "
                f"while it holds at most `max_sentences` sentences, so nothing would be generated. Pass "
                f"`max_sentences` >= {length} (and `max_new_sentences` to cap the continuation), or shorten "
                "the prompt."
            )


def _normalise_prompts(prompts, lang: str, dim: int):
    """-> (sentence lists or None, embedding tensors or None)."""
    if prompts is None:
        raise ValueError("Pass `prompts`: a string, a list of strings, a list of sentence lists, or embeddings.")
    if not isinstance(prompts, (str, list, tuple, torch.Tensor)):
        raise TypeError(
            f"`prompts` must be a string, a list of strings, a list of sentence lists, or a float tensor of SONAR "
            f"embeddings (B, T, {dim}); got {type(prompts).__name__}."
        )
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() == 2:
            prompts = prompts.unsqueeze(0)
        if prompts.dim() != 3:
            raise ValueError(
                f"Embedding prompts must have shape (B, T, {dim}) or (T, {dim}), got {tuple(prompts.shape)}."
            )
        prompts = list(prompts)
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise ValueError("`prompts` is empty: give at least one prompt.")
    if all(isinstance(p, torch.Tensor) for p in prompts):
        for i, p in enumerate(prompts):
            if not p.is_floating_point():
                raise TypeError(
                    f"Embedding prompt {i} has dtype {p.dtype}; embedding prompts are float SONAR embeddings "
                    f"(T, {dim}). To continue text, pass the text itself (token ids are not prompts)."
                )
            if p.dim() != 2 or p.shape[0] == 0 or p.shape[1] != dim:
                raise ValueError(f"Embedding prompt {i} must have shape (T, {dim}) with T >= 1 (SONAR embeddings of "
                                 f"width {dim}), got {tuple(p.shape)}.")  # fmt: skip
        return None, list(prompts)
    documents = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            sentences = split_sentences(prompt, lang)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(s, str) for s in prompt):
            sentences = [s.strip() for s in prompt if s.strip()]
        else:
            raise TypeError(f"Prompt {i} must be a string or a list of sentences, got {type(prompt).__name__}.")
        if not sentences:
            raise ValueError(f"Prompt {i} is empty: it holds no sentence to continue.")
        documents.append(sentences)
    return documents, None


def _embed_texts(model, tokenizer, texts: list[str], lang: str, batch_size: int) -> torch.Tensor:
    """Batched SONAR encoding that, like the reference, also accepts an empty decoded sentence."""
    lang_id = tokenizer.convert_tokens_to_ids(lang)
    eos_id = model.sonar_encoder.config.eos_token_id
    non_empty = [i for i, t in enumerate(texts) if t.strip()]
    ids = [[lang_id, eos_id] for _ in texts]
    if non_empty:
        encoded = encode_source(
            tokenizer, [texts[i] for i in non_empty], lang, model.sonar_encoder.config.max_position_embeddings
        )
        for i, row in zip(non_empty, encoded):
            ids[i] = row
    return model.sonar_encoder.encode_token_ids(ids, batch_size=batch_size, progress_bar=False)


def _eos_embedding(model, tokenizer, lang: str, batch_size: int) -> torch.Tensor:
    """enc(eos_sentence), computed on every call: a cache would have to notice a replaced tokenizer, a changed
    `config.eos_sentence`, new or quantized encoder weights, a new dtype, ... One short sentence costs 0.5% of a
    demo-model `generate` call (1.4 ms of 304 ms), less at full size, where beam decoding dominates."""
    return _embed_texts(model, tokenizer, [model.config.eos_sentence], lang, batch_size)[0]


def _left_pad(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged (T_i, d) -> (B, T, d) left-padded with zeros, and the (B, T) mask."""
    width = max(s.shape[0] for s in sequences)
    batch = sequences[0].new_zeros(len(sequences), width, sequences[0].shape[-1])
    mask = torch.zeros(len(sequences), width, dtype=torch.long, device=batch.device)
    for row, seq in enumerate(sequences):
        batch[row, width - seq.shape[0] :] = seq
        mask[row, width - seq.shape[0] :] = 1
    return batch, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Each document counts its positions from its own first sentence, whatever its padding."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


@torch.no_grad()
def generate_sentences(model, prompts, streamer: SentenceStreamer | None = None, **options) -> SonarLLMGenerateOutput:
    config = model.config
    check_generation_options(options, model.sonar_decoder.config.max_position_embeddings)
    prompt_lang = check_language(options["prompt_lang"] or config.default_lang)
    target_lang = check_language(options["target_lang"] or prompt_lang)
    add_begin = config.add_begin if options["add_begin"] is None else options["add_begin"]
    batch_size = options["batch_size"]
    # The backbone's inputs live where its first layer computes; tensors bound for the encoder or the decoder are
    # moved by their own methods, so with `device_map` every tensor follows the module that uses it.
    device, dtype = execution_device(model), model.dtype
    tokenizer = model._tokenizer_or_raise(options.get("tokenizer"))

    # 1. embed the prompt sentences
    documents, embedded = _normalise_prompts(prompts, prompt_lang, config.embed_dim)
    # Text and embedding prompts alike start with the begin sentence when the model was trained with it.
    if documents is not None and add_begin:
        documents = [[config.begin_sentence, *doc] for doc in documents]
    held = [len(doc) for doc in documents] if documents is not None else [len(e) + int(add_begin) for e in embedded]
    _check_prompt_lengths(held, options["max_sentences"], begin=add_begin)
    if documents is not None:
        flat = [s for doc in documents for s in doc]
        flat_embeddings = _embed_texts(model, tokenizer, flat, prompt_lang, batch_size)
        embedded = list(torch.split(flat_embeddings, [len(doc) for doc in documents]))
    elif add_begin:
        begin = _embed_texts(model, tokenizer, [config.begin_sentence], prompt_lang, batch_size)[0]  # (d,)
        embedded = [torch.cat([begin.to(device=e.device, dtype=e.dtype).unsqueeze(0), e]) for e in embedded]
    embedded = [e.to(device=device, dtype=dtype) for e in embedded]
    positions, cap = config.llama_config.max_position_embeddings, options["max_new_sentences"]
    for i, e in enumerate(embedded):
        model._check_inputs(e.unsqueeze(0), None, None)
        if e.shape[0] > positions:
            raise ValueError(f"Prompt {i} has {e.shape[0]} sentences, more than the backbone's {positions} positions.")
        # the longest document the backbone reads: one that grows until it holds `max_sentences` (or the cap)
        longest = max(e.shape[0], min(options["max_sentences"], e.shape[0] + (cap - 1 if cap else positions)))
        if longest > positions:
            raise ValueError(
                f"Prompt {i} may grow to {longest} sentences (`max_sentences={options['max_sentences']}`), more "
                f"than the backbone's {positions} positions (`llama_config.max_position_embeddings`). Pass "
                f"`max_sentences` <= {positions} or a smaller `max_new_sentences`."
            )
    num_docs = len(embedded)
    lengths = [e.shape[0] for e in embedded]
    eos = _eos_embedding(model, tokenizer, target_lang, batch_size).to(device=device, dtype=torch.float32)

    output = SonarLLMGenerateOutput(
        prompt_sentences=[list(doc) for doc in documents] if documents is not None else [[] for _ in embedded],
        sentences=[[] for _ in embedded],
        embeddings=[[] for _ in embedded],
        predicted_embeddings=[[] for _ in embedded],
        finished=[False] * num_docs,
        stop_reasons=[None] * num_docs,
    )
    active = [n <= options["max_sentences"] for n in lengths]

    decode_settings = dict(
        lang=target_lang,
        num_beams=options["num_beams"],  # with `do_sample=True` and beams > 1: beam sampling, as in transformers
        max_length=options["max_length"],
        batch_size=batch_size,
        do_sample=options["do_sample"],
    )
    if options["do_sample"]:
        decode_settings.update(temperature=options["temperature"], top_p=options["top_p"], top_k=options["top_k"])

    def decode_step(latent: torch.Tensor):
        """Decode (n, d) latents; -> texts, the embeddings fed back, those repetition compares (the re-encoded
        sentences when there are some, else the latents) and whether each is the end sentence."""
        texts = model.sonar_decoder.decode(latent, tokenizer=tokenizer, **decode_settings)
        reencoded = None
        if "reencoded" in (options["eos_check"], options["feedback"]):
            reencoded = _embed_texts(model, tokenizer, texts, target_lang, batch_size).to(dtype)
        checked = reencoded if options["eos_check"] == "reencoded" else latent
        # With `device_map`, the encoder, the decoder and the backbone's ends may sit on different devices.
        end = eos.to(checked.device).unsqueeze(0)
        cosine = torch.nn.functional.cosine_similarity(checked.float(), end, dim=-1)  # (n,)
        fed = (reencoded if options["feedback"] == "reencoded" else latent).to(device)
        compared = reencoded if reencoded is not None else latent
        return texts, list(fed), list(compared), (cosine >= options["eos_threshold"]).tolist()

    # A seed must not touch the global RNG of any device the model runs on (sampling happens on the decoder's).
    accelerators = sorted({p.device for p in model.parameters() if p.device.type == "cuda"}, key=str)
    rng = torch.random.fork_rng(devices=accelerators) if options["seed"] is not None else contextlib.nullcontext()
    with rng:
        if options["seed"] is not None:
            torch.manual_seed(options["seed"])
        # 2. run the prompts through the backbone once, keeping the cache
        sequence, mask = _left_pad(embedded)
        step = model.predict_next(sequence, mask, position_ids=_positions(mask), use_cache=options["use_cache"])
        cache, predictions = step.cache, step.predicted_embeddings[:, -1].to(device)  # (B, d)

        new_counts = [0] * num_docs
        histories = [ContinuationHistory() for _ in range(num_docs)]
        special_texts = (config.begin_sentence, config.eos_sentence)
        while any(active):
            rows = [i for i in range(num_docs) if active[i]]
            # 3. decode every active document's prediction (moved by latent noise when sampling) in one SONAR call
            predicted = predictions[rows]  # (n, d)
            latent = sample_latent(predicted, options["latent_temperature"], options["latent_top_p"])
            texts, fed, compared, is_end = decode_step(latent)
            # 4. judge each sentence: the end, a sentence to keep, or one to avoid by re-decoding with fresh noise
            verdicts = [judge_sentence(texts[j], compared[j], is_end[j], histories[i], options, special_texts)
                        for j, i in enumerate(rows)]  # fmt: skip
            for attempt in range(1, options["avoid_attempts"] + 1):
                redo = [j for j, verdict in enumerate(verdicts) if verdict in AVOIDED]
                if not redo:
                    break
                temperature = avoid_temperature(options, attempt)
                retry = decode_step(sample_latent(predicted[redo], temperature, options["latent_top_p"]))
                for k, j in enumerate(redo):
                    texts[j], fed[j], compared[j], is_end[j] = (part[k] for part in retry)
                    verdicts[j] = judge_sentence(texts[j], compared[j], is_end[j], histories[rows[j]], options,
                                                 special_texts)  # fmt: skip
            next_inputs = sequence.new_zeros(num_docs, 1, config.embed_dim)
            next_mask = torch.zeros(num_docs, 1, dtype=mask.dtype, device=device)
            streamed = []
            for j, i in enumerate(rows):
                if verdicts[j] != "accept":
                    active[i] = False
                    output.finished[i], output.stop_reasons[i] = STOP_OUTCOMES[verdicts[j]]
                    continue
                histories[i].add(texts[j], compared[j])
                output.sentences[i].append(texts[j])
                output.embeddings[i].append(fed[j])
                output.predicted_embeddings[i].append(predicted[j])
                streamed.append((i, texts[j]))
                lengths[i] += 1
                new_counts[i] += 1
                next_inputs[i, 0], next_mask[i, 0] = fed[j], 1
                cap = options["max_new_sentences"]
                if lengths[i] > options["max_sentences"]:
                    active[i], output.stop_reasons[i] = False, "max_sentences"
                elif cap is not None and new_counts[i] >= cap:
                    active[i], output.stop_reasons[i] = False, "max_new_sentences"
            if streamer is not None and streamed:
                streamer.put(streamed)
            if not any(active):
                break
            # 5. feed the new sentences back (one cached backbone step, or a full recompute without the cache)
            mask = torch.cat([mask, next_mask], dim=1)
            if options["use_cache"]:
                positions = _positions(mask)[:, -1:]
                step = model.predict_next(next_inputs, mask, position_ids=positions, cache=cache, use_cache=True)
                cache = step.cache
            else:
                sequence = torch.cat([sequence, next_inputs], dim=1)
                step = model.predict_next(sequence, mask, position_ids=_positions(mask), use_cache=False)
            predictions = step.predicted_embeddings[:, -1].to(device)
    if streamer is not None:
        streamer.end()

    empty = torch.empty(0, config.embed_dim, device=device, dtype=dtype)
    output.embeddings = [torch.stack(e) if e else empty for e in output.embeddings]
    output.predicted_embeddings = [torch.stack(e) if e else empty for e in output.predicted_embeddings]
    output.texts = [" ".join(s) for s in output.sentences]
    output.full_texts = [" ".join([*p, *s]) for p, s in zip(output.prompt_sentences, output.sentences)]
    return output


__all__ = [
    "SENTENCEX_LANGUAGES",
    "split_sentences",
    "splitter_language",
    "AVOIDED",
    "CONTROL_DEFAULTS",
    "REPETITION_ACTIONS",
    "STOP_OUTCOMES",
    "ContinuationHistory",
    "avoid_temperature",
    "check_control_options",
    "judge_sentence",
    "latent_noise",
    "sample_latent",
    "DEFAULT_SENTENCE_GENERATION",
    "SonarLLMGenerateOutput",
    "SentenceStreamer",
    "PrintSentenceStreamer",
    "generate_sentences",
    "merge_generation_options",
    "check_generation_options",
    "warn_ignored_sampling_options",
]
