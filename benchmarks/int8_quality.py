"""Quality of the opt-in int8 SONAR (`quantize_sonar`) on the packaged demo model's trained miniature SONAR.

    python benchmarks/int8_quality.py            # 400 distinct story-world sentences of two corpus seeds, ~2 min

For each seed: decoded sentences identical to fp32's (issue 14's bar: at least 95%), mean cosine between the
re-encoded fp32 and int8 sentences (at least 0.99), and the encoder embeddings' cosine to fp32.
"""

import json

import torch

from sonar_llm_hf import SonarLLMForCausalSentenceModeling, quantize_sonar
from sonar_llm_hf.demo import default_model_path
from sonar_llm_hf.demo.story_world import distinct_sentences


@torch.no_grad()
def main() -> None:
    fp32 = SonarLLMForCausalSentenceModeling.from_pretrained(default_model_path()).eval()
    int8 = quantize_sonar(SonarLLMForCausalSentenceModeling.from_pretrained(default_model_path()).eval())
    results = {}
    for seed in (0, 123):
        sentences = distinct_sentences(400, seed=seed, limit=400)
        out = {}
        for name, model in (("fp32", fp32), ("int8", int8)):
            out[name + "_embeddings"] = model.sonar_encoder.encode(sentences)
            out[name] = model.sonar_decoder.decode(out[name + "_embeddings"])
            out[name + "_reencoded"] = model.sonar_encoder.encode(out[name])
        cosine = torch.nn.functional.cosine_similarity
        results[f"seed_{seed}"] = {
            "sentences": len(sentences),
            "same_decoded": sum(a == b for a, b in zip(out["fp32"], out["int8"])),
            "reencoded_mean_cosine": float(cosine(out["fp32_reencoded"], out["int8_reencoded"]).mean()),
            "embedding_mean_cosine": float(cosine(out["fp32_embeddings"], out["int8_embeddings"]).mean()),
        }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
