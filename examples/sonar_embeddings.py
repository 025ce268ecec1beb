"""The SONAR encoder in sentence-transformers and MTEB, offline, on the packaged demo model's miniature SONAR.

    python examples/sonar_embeddings.py [--encoder sonar/encoder] [--sentences 200] [--out DIR]

1. writes a folder that loads with `SentenceTransformer(folder, trust_remote_code=True)` (with `--encoder`, a converted
   encoder folder already is one and is used as it is) and checks `encode(texts, lang=...)` against
   `SonarTextEncoder.encode`;
2. runs `mteb.evaluate` on a tiny local bitext-mining task: story-world sentences (English, the only language the
   demo encoder knows) against copies with one word left out, and prints mteb's scores.

The demo encoder knows a few hundred words of one story world: its score says the integration runs end to end, not
how good SONAR is. Needs `pip install "sonar-llm-hf[mteb]"`.
"""

import argparse
import random
import tempfile
from pathlib import Path

import torch


def one_word_left_out(sentence: str, rng: random.Random) -> str:
    words = sentence.split()
    if len(words) < 3:
        return sentence
    del words[rng.randrange(1, len(words) - 1)]  # keep the first and the last (with its full stop)
    return " ".join(words)


def local_bitext_task(pairs: list[tuple[str, str]]):
    """An mteb bitext-mining task over in-memory pairs (mteb's mock task, with our data and languages)."""
    from datasets import Dataset, DatasetDict
    from mteb.mocks.mock_tasks.bitext_mining import MockBitextMiningTask

    class StoryWordDropBitext(MockBitextMiningTask):
        metadata = MockBitextMiningTask.metadata.model_copy(
            update={"name": "StoryWorldWordDropBitext", "eval_langs": {"eng-eng": ["eng-Latn", "eng-Latn"]},
                    "description": "Story-world sentences against copies with one word left out (local, offline)."}
        )  # fmt: skip

        def load_data(self, num_proc=None, **kwargs):
            columns = {"sentence1": [a for a, _ in pairs], "sentence2": [b for _, b in pairs]}
            self.dataset = DatasetDict({"eng-eng": DatasetDict({"test": Dataset.from_dict(columns)})})
            self.data_loaded = True

    return StoryWordDropBitext()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="a converted SONAR encoder folder (default: the packaged demo model's)")
    parser.add_argument("--sentences", type=int, default=200, help="pairs in the local bitext task")
    parser.add_argument("--out", help="where to write the sentence-transformers folder (default: a temporary one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(4, torch.get_num_threads()))

    import mteb
    from sentence_transformers import SentenceTransformer

    from sonar_llm_hf import SonarLLMForCausalSentenceModeling, SonarTextEncoder
    from sonar_llm_hf.demo import PACKAGED_DEMO
    from sonar_llm_hf.demo.story_world import distinct_sentences
    from sonar_llm_hf.integrations.mteb import SonarMTEBEncoder, sonar_model_meta
    from sonar_llm_hf.integrations.sentence_transformers import save_sentence_transformer

    with tempfile.TemporaryDirectory() as scratch:
        if args.encoder:
            folder, encoder = Path(args.encoder), SonarTextEncoder.from_pretrained(args.encoder).eval()
            name = "local/sonar-encoder"
        else:
            encoder = SonarLLMForCausalSentenceModeling.from_pretrained(PACKAGED_DEMO).sonar_encoder.eval()
            folder = save_sentence_transformer(encoder, Path(args.out or scratch) / "demo-sonar-encoder")
            name = "local/demo-sonar-encoder"
        model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
        probe = ["Tom had a red ball.", "Lily went to the park.", "Tom had a red car."]
        by_st = model.encode(probe, lang="eng_Latn", convert_to_tensor=True)
        by_sonar = encoder.encode(probe, lang="eng_Latn")
        print(
            f"sentence-transformers folder: {folder}"
            + ("" if args.encoder or args.out else " (temporary: --out keeps it)")
        )
        print(f"  encode(texts, lang='eng_Latn') vs SonarTextEncoder.encode: max |diff| "
              f"{(by_st - by_sonar).abs().max().item():.1e}")  # fmt: skip
        scores = model.similarity(by_st[:1], by_st[1:])[0].tolist()  # cosine, as the folder's config says
        print(f"  cosine('{probe[0]}', ...): " + ", ".join(f"'{t}' {x:.3f}" for t, x in zip(probe[1:], scores)))

        rng = random.Random(0)
        sentences = [s for s in distinct_sentences(2000, seed=1, limit=4 * args.sentences) if len(s.split()) >= 4]
        pairs = [(s, one_word_left_out(s, rng)) for s in sentences[: args.sentences]]
        task = local_bitext_task(pairs)
        wrapper = SonarMTEBEncoder(encoder, model_meta=sonar_model_meta(name))
        scores = mteb.evaluate(wrapper, task, cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
        print(f"mteb {task.metadata.name} ({len(pairs)} pairs): accuracy {scores['accuracy']:.3f}, "
              f"f1 {scores['f1']:.3f}, main score {scores['main_score']:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
