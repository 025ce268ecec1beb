"""Sentence-level controls of SONAR-LLM's `generate`: repetition, a minimum length, and latent sampling.

None of them is in the reference loop, and all are off by default, so a converted model reproduces it unless the
user opts in (`model.generation_config`, `generate(...)` keywords or the CLI flags):

- `repetition_threshold`: a generated sentence *repeats* when its text equals, or its embedding has cosine >=
  the threshold with, ANY earlier sentence of the continuation (not only the previous one, as LCM's
  `stop_on_repetition_cosine_threshold` does, and never a prompt sentence). The embedding compared is the
  re-encoded sentence (the reference's `eos_check`/`feedback`), or the latent that was decoded when nothing is
  re-encoded. `repetition_action="stop"` ends the document before the repeat; `"avoid"` re-decodes (below).
- `min_new_sentences`: before this many sentences, the end sentence is avoided (re-decoded) rather than accepted;
  LCM's `min_gen_len`. The caps win: `max_new_sentences=1` still stops after one sentence (a model that saves
  `min_new_sentences=2` must not refuse a call that asks for one sentence).
- `avoid_special_sentences`: the begin and end sentences ("Begin of text.", "End of sequence.") are never kept as
  story sentences (they are avoided; they appear when the end check compares predictions, not re-decoded text).
- `latent_temperature` / `latent_top_p`: the prediction is moved by Gaussian noise before decoding (the latent
  sampling of LCM's `lcm_temperature` and of the SONAR-LLM authors' loader). The noise of a row is
  `latent_temperature * rms(prediction) * z`, with z standard normal, so its norm is about `latent_temperature`
  times the prediction's: 0.1 moves it by ~10%. `latent_top_p` draws z from the Gaussian's highest-density region
  of mass p (a ball, since the density falls with |z|), the continuous counterpart of nucleus sampling. In d
  dimensions nearly all the mass lies in a thin shell of radius ~sqrt(d), so it only trims the largest draws (at
  d=1024, p=0.5 caps |z| at 1.00 sqrt(d) where p=1 reaches ~1.1 sqrt(d)); it is there for parity, not diversity.

*Avoiding* a sentence re-decodes the same prediction with fresh latent noise, at temperature
`latent_temperature + k * avoid_temperature` for attempt k = 1..`avoid_attempts` (one SONAR decode and re-encode
per attempt, batched over the documents that need one), and keeps the first sentence that is acceptable. When every
attempt fails, a too-early end ends the document (it has fewer than `min_new_sentences`), and a repeat or special
sentence stops it (`stop_reasons` says which). Noise is drawn from torch's RNG: pass `seed` for reproducible output.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from .validation_sonar import check_bool, check_integer

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


def avoid_temperature(options: dict, attempt: int) -> float:
    return options["latent_temperature"] + attempt * options["avoid_temperature"]


__all__ = [
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
]
