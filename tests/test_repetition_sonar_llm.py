"""Sentence-level controls of `generate` (issue 25): repetition, min_new_sentences, special sentences, latent
sampling; their validation, their round trip through generation_config.json, and their CLI flags."""

import math

import pytest
import torch
from test_cli import run_cli
from test_generation_sonar_llm import PROMPTS, make_end_predictable
from transformers import GenerationConfig

from sonar_llm_hf import SonarLLMForCausalSentenceModeling
from sonar_llm_hf.models.generation_sonar_llm import (
    CONTROL_DEFAULTS,
    ContinuationHistory,
    _chi2_quantile,
    judge_sentence,
    latent_noise,
)

FAST = dict(num_beams=1, max_length=12)
# The tiny random encoder maps most sentences within cosine 0.98 of the end sentence: only an exact one ends.
NO_END = dict(eos_threshold=1.0, **FAST)


def predict_constant(model, sentence):
    """Make the backbone predict enc(sentence) at every position, so that it says the same thing forever."""
    target = model.sonar_encoder.encode([sentence])[0]
    with torch.no_grad():
        model.sentence_out_proj.weight.zero_()
        model.sentence_out_proj.bias.copy_(target)


def script_decoder(model, scripted):
    """Replace the SONAR decoder's output by scripted sentences, one per decoded row, in order."""
    queue = list(scripted)

    def decode(embeddings, **kwargs):
        return [queue.pop(0) for _ in range(embeddings.shape[0])]

    model.sonar_decoder.decode = decode


def test_defaults_are_the_reference_loop_and_draw_no_random_number(sonar_llm):
    state = torch.random.get_rng_state()
    plain = sonar_llm.generate(PROMPTS, max_new_sentences=3, **FAST)
    explicit = sonar_llm.generate(PROMPTS, max_new_sentences=3, **CONTROL_DEFAULTS, **FAST)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert plain.sentences == explicit.sentences
    assert plain.stop_reasons == ["max_new_sentences"] * 3


def test_a_repeated_sentence_loops_without_control_and_stops_with_it(sonar_llm):
    predict_constant(sonar_llm, "The cat sat on the mat.")
    loop = sonar_llm.generate(PROMPTS[:1], max_new_sentences=4, **FAST)
    assert len(loop.sentences[0]) == 4 and len(set(loop.sentences[0])) == 1
    stopped = sonar_llm.generate(PROMPTS[:1], max_new_sentences=4, repetition_threshold=0.99, **FAST)
    assert stopped.sentences[0] == loop.sentences[0][:1]
    assert stopped.finished == [False] and stopped.stop_reasons == ["repetition"]


def test_repetition_compares_with_any_earlier_sentence_not_only_the_last(sonar_llm):
    """A B A: LCM's check (the previous sentence only) would keep the second A; ours stops before it."""
    a, b = sonar_llm.sonar_encoder.encode(["The cat sat.", "A dog ran in the park."])
    threshold = (1 + torch.cosine_similarity(a, b, dim=0).item()) / 2  # B is no repeat of A: the tiny encoder's
    assert threshold < 1  # random embeddings are close, so the threshold sits between cos(A, B) and 1
    script_decoder(sonar_llm, ["The cat sat.", "A dog ran in the park.", "The cat sat.", "Tom had a red car."])
    out = sonar_llm.generate(PROMPTS[:1], max_new_sentences=4, repetition_threshold=threshold, **NO_END)
    assert out.sentences == [["The cat sat.", "A dog ran in the park."]] and out.stop_reasons == ["repetition"]
    history = ContinuationHistory()
    history.add("first", torch.tensor([1.0, 0.0]))
    history.add("second", torch.tensor([0.0, 1.0]))
    # cosine 0.9988 with the first sentence, 0.05 with the last
    assert history.repeats("other", torch.tensor([1.0, 0.05]), 0.99)
    assert not history.repeats("other", torch.tensor([1.0, 1.0]), 0.99)  # 0.707 with both
    assert history.repeats("second", torch.tensor([1.0, -1.0]), 0.99)  # same text, whatever the embedding


def test_avoiding_a_repeat_re_decodes_with_latent_noise(sonar_llm):
    predict_constant(sonar_llm, "The cat sat on the mat.")
    options = dict(max_new_sentences=3, repetition_threshold=0.99, repetition_action="avoid", avoid_temperature=0.5,
                   seed=0, **FAST)  # fmt: skip
    out = sonar_llm.generate(PROMPTS[:1], **options)
    again = sonar_llm.generate(PROMPTS[:1], **options)
    assert out.sentences == again.sentences
    sentences = out.sentences[0]
    assert len(sentences) >= 2 and len(set(sentences)) == len(sentences)  # more than the loop's one, none twice
    embeddings = torch.nn.functional.normalize(out.embeddings[0].float(), dim=-1)
    cosines = embeddings @ embeddings.T - 2 * torch.eye(len(sentences))
    assert cosines.max() < 0.99
    assert out.stop_reasons[0] in ("max_new_sentences", "repetition")
    # Without attempts, avoiding cannot replace the repeat: the document stops there.
    none = sonar_llm.generate(PROMPTS[:1], **{**options, "avoid_attempts": 0})
    assert len(none.sentences[0]) == 1 and none.stop_reasons == ["repetition"]


def test_min_new_sentences_avoids_an_early_end(sonar_llm):
    make_end_predictable(sonar_llm)
    options = dict(eos_check="predicted", seed=0, **FAST)
    assert sonar_llm.generate(PROMPTS, **options).sentences == [[], [], []]
    # Attempt 1 moves the prediction by ~50% of its norm: cosine to the end sentence ~0.9 < 0.98, not an end.
    out = sonar_llm.generate(PROMPTS, min_new_sentences=2, avoid_temperature=0.5, **options)
    assert [len(s) for s in out.sentences] == [2, 2, 2]
    assert out.finished == [True] * 3 and out.stop_reasons == ["end"] * 3
    # The caps win over the minimum.
    capped = sonar_llm.generate(PROMPTS, min_new_sentences=2, max_new_sentences=1, avoid_temperature=0.5, **options)
    assert [len(s) for s in capped.sentences] == [1, 1, 1] and capped.stop_reasons == ["max_new_sentences"] * 3
    # When no attempt is allowed the end is accepted: a document never runs on past its model's end.
    out = sonar_llm.generate(PROMPTS, min_new_sentences=2, avoid_attempts=0, **options)
    assert out.sentences == [[], [], []] and out.finished == [True] * 3


def test_special_sentences_are_avoided_only_on_request(sonar_llm):
    begin = sonar_llm.config.begin_sentence
    script_decoder(sonar_llm, [begin, "The cat sat."])
    kept = sonar_llm.generate(PROMPTS[:1], max_new_sentences=1, **NO_END)
    assert kept.sentences == [[begin]]
    script_decoder(sonar_llm, [begin, "The cat sat."])
    avoided = sonar_llm.generate(PROMPTS[:1], max_new_sentences=1, avoid_special_sentences=True, seed=0, **NO_END)
    assert avoided.sentences == [["The cat sat."]]
    history = ContinuationHistory()
    options = {**CONTROL_DEFAULTS, "avoid_special_sentences": True}
    assert judge_sentence("End of sequence.", torch.ones(2), False, history, options, (begin, "End of sequence."))\
        == "special"  # fmt: skip


def test_latent_sampling_is_seeded_and_differs_from_greedy(sonar_llm):
    """Fed back as predicted, the noisy latents are the embeddings (the tiny decoder says "jourjour" to all)."""
    options = dict(max_new_sentences=3, feedback="predicted", **FAST)
    greedy = sonar_llm.generate(PROMPTS, **options)
    first = sonar_llm.generate(PROMPTS, seed=1, latent_temperature=0.5, **options)
    again = sonar_llm.generate(PROMPTS, seed=1, latent_temperature=0.5, **options)
    other = sonar_llm.generate(PROMPTS, seed=2, latent_temperature=0.5, **options)
    for i in range(len(PROMPTS)):
        torch.testing.assert_close(first.embeddings[i], again.embeddings[i], rtol=0, atol=0)
        assert not torch.allclose(first.embeddings[i], other.embeddings[i])
        assert not torch.allclose(first.embeddings[i], greedy.embeddings[i])
        # The backbone's raw predictions are reported, not the latents; the first one is the greedy run's.
        torch.testing.assert_close(first.predicted_embeddings[i][0], greedy.predicted_embeddings[i][0])
        raw = first.predicted_embeddings[i][0]
        moved = (first.embeddings[i][0] - raw).norm() / raw.norm()
        assert 0.1 < moved < 1.5  # 0.5 |z| / sqrt(16), |z| of a 16-dim normal is within [0.8, 12] but for ~1e-6


def test_latent_noise_scale_and_top_p():
    torch.manual_seed(0)
    predicted = torch.randn(64, 4096) * 3.0
    noise = latent_noise(predicted, 0.2)
    relative = (noise.norm(dim=-1) / predicted.norm(dim=-1)).mean()
    # |z| / sqrt(d) has mean ~1 - 1/(4d) and std ~0.71/sqrt(d) per row: 1e-3 over 64 rows is > 10 std.
    assert abs(relative.item() - 0.2) < 0.2 * 1e-3
    # For d = 2 the chi-square quantile is closed-form: -2 ln(1 - p).
    p = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(_chi2_quantile(p, 2), -2 * torch.log1p(-p))
    # top_p = 0.5 in 2-D: every |z| within the median radius; half of them within the radius of mass 0.25.
    unit = torch.ones(20000, 2)  # rms 1 per row, so the noise is z itself at temperature 1
    radius = latent_noise(unit, 1.0, top_p=0.5).norm(dim=-1)
    assert radius.max() <= math.sqrt(-2 * math.log(0.5)) + 1e-5
    inner = (radius <= math.sqrt(-2 * math.log(0.75))).double().mean().item()
    assert abs(inner - 0.5) < 0.02  # binomial std 0.0035


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"min_new_sentences": -1}, ValueError, "min_new_sentences"),
        ({"min_new_sentences": 1.5}, TypeError, "min_new_sentences"),
        ({"repetition_threshold": 1.5}, ValueError, "repetition_threshold"),
        ({"repetition_threshold": "high"}, TypeError, "repetition_threshold"),
        ({"repetition_action": "skip"}, ValueError, "'stop' or 'avoid'"),
        ({"avoid_special_sentences": "yes"}, TypeError, "avoid_special_sentences"),
        ({"avoid_attempts": -1}, ValueError, "avoid_attempts"),
        ({"avoid_temperature": 0.0}, ValueError, "avoid_temperature"),
        ({"latent_temperature": -0.1}, ValueError, "latent_temperature"),
        ({"latent_temperature": float("nan")}, TypeError, "latent_temperature"),
        ({"latent_top_p": 0.0}, ValueError, "latent_top_p"),
        ({"latent_top_p": 1.5}, ValueError, "latent_top_p"),
    ],
)
def test_bad_control_values_are_refused(sonar_llm, options, error, message):
    with pytest.raises(error, match=message):
        sonar_llm.generate(PROMPTS[:1], **options)


def test_controls_round_trip_through_generation_config(sonar_llm, tmp_path):
    settings = dict(min_new_sentences=1, repetition_threshold=0.95, repetition_action="avoid",
                    avoid_special_sentences=True, latent_temperature=0.3, latent_top_p=0.9, seed=5)  # fmt: skip
    for key, value in settings.items():
        setattr(sonar_llm.generation_config, key, value)
    sonar_llm.save_pretrained(tmp_path)
    sonar_llm.tokenizer.save_pretrained(tmp_path)
    saved = GenerationConfig.from_pretrained(tmp_path)
    assert {key: getattr(saved, key) for key in settings} == settings
    loaded = SonarLLMForCausalSentenceModeling.from_pretrained(tmp_path)
    from_saved = loaded.generate(PROMPTS, max_new_sentences=3, **FAST)
    explicit = sonar_llm.__class__.from_pretrained(tmp_path)
    explicit.generation_config = GenerationConfig()
    from_keywords = explicit.generate(PROMPTS, max_new_sentences=3, **settings, **FAST)
    assert from_saved.sentences == from_keywords.sentences


def test_cli_flags_reach_generate(tiny_sonar_llm_dir, sonar_llm):
    prompt = "The cat sat on the mat. It was happy."
    result = run_cli("generate", prompt, "--model", str(tiny_sonar_llm_dir), "--num-beams", "1", "--quiet",
                     "--max-new-sentences", "3", "--latent-temperature", "0.5", "--latent-top-p", "0.9",
                     "--repetition-threshold", "0.9", "--repetition-action", "avoid", "--avoid-special-sentences",
                     "--min-new-sentences", "2", "--avoid-attempts", "3", "--avoid-temperature", "0.2",
                     "--seed", "7")  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = sonar_llm.generate(prompt, num_beams=1, max_new_sentences=3, latent_temperature=0.5, latent_top_p=0.9,
                                  repetition_threshold=0.9, repetition_action="avoid", avoid_special_sentences=True,
                                  min_new_sentences=2, avoid_attempts=3, avoid_temperature=0.2, seed=7)  # fmt: skip
    assert result.stdout.splitlines() == expected.sentences[0]
    bad = run_cli("generate", prompt, "--model", str(tiny_sonar_llm_dir), "--latent-temperature", "-1")
    assert bad.returncode == 2 and "`latent_temperature` must lie in" in bad.stderr


def test_cli_reference_loop_turns_saved_controls_off(sonar_llm, tmp_path):
    """A folder that saves repetition control; `--reference-loop` generates as the reference does."""
    predict_constant(sonar_llm, "The cat sat on the mat.")
    sonar_llm.generation_config.repetition_threshold = 0.99
    sonar_llm.save_pretrained(tmp_path)
    sonar_llm.tokenizer.save_pretrained(tmp_path)
    common = ("generate", "Tom had a red car.", "--model", str(tmp_path), "--num-beams", "1", "--quiet",
              "--max-new-sentences", "3")  # fmt: skip
    saved = run_cli(*common)
    reference = run_cli(*common, "--reference-loop")
    assert saved.returncode == reference.returncode == 0, saved.stderr + reference.stderr
    assert len(saved.stdout.splitlines()) == 1  # the repeat stopped the document
    assert reference.stdout.splitlines() == sonar_llm.generate("Tom had a red car.", num_beams=1, max_new_sentences=3,
                                                               repetition_threshold=None).sentences[0]  # fmt: skip
    assert len(reference.stdout.splitlines()) == 3
