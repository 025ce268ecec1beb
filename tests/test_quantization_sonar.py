"""int8 SONAR (`quantize_sonar`) stays close to fp32 on the trained miniature SONAR of the packaged demo model.

Quality bar (approximate path): at least 95% of decoded sentences identical to fp32, mean cosine of the re-encoded
sentences at least 0.99. Speed is a benchmark row (benchmarks/bench_fairseq2.py --int8), not a test.
"""

import pytest
import torch

from sonar_llm_hf import SonarLLMForCausalSentenceModeling, quantize_sonar
from sonar_llm_hf.demo import PACKAGED_DEMO
from sonar_llm_hf.demo.story_world import distinct_sentences


@pytest.fixture(scope="module")
def demo_pair():
    fp32 = SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval()
    int8 = quantize_sonar(SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval())
    return fp32, int8


def test_int8_round_trip_matches_fp32_on_story_sentences(demo_pair):
    fp32, int8 = demo_pair
    sentences = distinct_sentences(200, seed=0, limit=150)
    decoded = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        embeddings = model.sonar_encoder.encode(sentences)
        decoded[name] = model.sonar_decoder.decode(embeddings)
        decoded[name + "_reencoded"] = model.sonar_encoder.encode(decoded[name])
    same = sum(a == b for a, b in zip(decoded["fp32"], decoded["int8"]))
    assert same >= 0.95 * len(sentences), f"{same}/{len(sentences)} int8 sentences equal fp32's"
    cosine = torch.nn.functional.cosine_similarity(decoded["fp32_reencoded"], decoded["int8_reencoded"])
    assert cosine.mean() >= 0.99, float(cosine.mean())


def test_int8_decoder_serves_transformers_generate_and_refuses_twice(demo_pair):
    fp32, int8 = demo_pair
    embeddings = fp32.sonar_encoder.encode(["The cat sat on the mat.", "Tom had a red car."])
    greedy = int8.sonar_decoder.decode(embeddings, num_beams=1)  # transformers' generate: the head's forward
    assert greedy == fp32.sonar_decoder.decode(embeddings, num_beams=1)
    with pytest.raises(ValueError, match="already quantized"):
        quantize_sonar(int8)


def test_int8_refuses_non_fp32_models():
    model = SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).eval()
    with pytest.raises(ValueError, match="fp32"):
        quantize_sonar(model.sonar_encoder.to(torch.bfloat16))
    with pytest.raises(TypeError, match="SonarTextEncoder"):
        quantize_sonar(torch.nn.Linear(2, 2))
