"""Build the offline demo world: a miniature SONAR and SONAR-LLM trained here, and the paper's CE-vs-MSE result.

    python examples/train_demo_world.py [--output sonar_llm_hf/demo_model] [--minutes-sonar 8] [--llm-steps 800]

1. a story corpus from `sonar_llm_hf.story_world` (20,000 stories, 10% held out);
2. a SentencePiece vocabulary and a miniature SONAR (our SonarTextEncoder/SonarTextDecoder, d 256) trained as a
   sentence autoencoder: the decoder rebuilds each sentence from its mean-pooled embedding;
3. two miniature SONAR-LLMs on the frozen miniature SONAR with equal budgets: `loss_type="ce"` (the paper) and
   `"mse"` (the Large Concept Model baseline);
4. held-out evaluation: SONAR exact-match reconstruction, token CE through the decoder, and the paper's NLG metrics
   on the first generated sentence after a 2-sentence prompt: BLEU (nltk 3.10.4 `sentence_bleu`, smoothing
   method4), ROUGE-L F1 (rouge-score 0.1.2, stemmer), METEOR (nltk, exact + stem matching: WordNet synonyms
   need a download, so they are off);
5. the CE model is saved as the package's default demo model.

Deterministic from `--seed`; about 20 minutes on 2 CPU cores. Needs `pip install -e ".[eval]"` for the metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from sonar_llm_hf import (
    SonarLLMConfig,
    SonarLLMForCausalSentenceModeling,
    SonarTextDecoder,
    SonarTextDecoderConfig,
    SonarTextEncoder,
    SonarTextEncoderConfig,
    llama_preset,
)
from sonar_llm_hf.story_world import generate_corpus, split_corpus
from sonar_llm_hf.testing_utils import build_tiny_tokenizer
from sonar_llm_hf.tokenization_sonar import encode_source, encode_target

EOS, BEGIN = "End of sequence.", "Begin of text."


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def train_sonar(tokenizer, sentences: list[str], minutes: float, seed: int):
    """Sentence autoencoder; noise on the embedding makes the decoder robust to imperfect predictions."""
    text = dict(d_model=256, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                encoder_ffn_dim=768, decoder_ffn_dim=768, vocab_size=len(tokenizer) + 2, dropout=0.0,
                attention_dropout=0.0)  # fmt: skip
    torch.manual_seed(seed)
    encoder, decoder = SonarTextEncoder(SonarTextEncoderConfig(**text)), SonarTextDecoder(SonarTextDecoderConfig(**text))
    source = encode_source(tokenizer, sentences, "eng_Latn")
    target = encode_target(tokenizer, sentences, "eng_Latn")
    parameters = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=1.5e-3, weight_decay=0.01)
    rng = random.Random(seed)
    start, step = time.time(), 0
    encoder.train(), decoder.train()
    while time.time() - start < minutes * 60:
        batch = rng.sample(range(len(sentences)), 64)
        ids = pad([source[i] for i in batch], 1)
        labels = pad([target[i] for i in batch], -100)
        embeddings = encoder(ids, (ids != 1).long()).pooler_output
        noisy = embeddings + 0.05 * embeddings.norm(dim=-1, keepdim=True) * torch.randn_like(embeddings) / math.sqrt(256)
        loss = decoder(sentence_embeddings=noisy, labels=labels).loss
        for group in optimizer.param_groups:
            group["lr"] = 1.5e-3 * min(1.0, (step + 1) / 200)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % 200 == 0:
            print(f"  sonar step {step}: loss {loss.item():.3f}", flush=True)
    encoder.eval(), decoder.eval()
    encoder.tokenizer = decoder.tokenizer = tokenizer
    return encoder, decoder, step


def exact_match(encoder, decoder, sentences: list[str]) -> float:
    decoded = decoder.decode(encoder.encode(sentences, batch_size=256), num_beams=1, max_length=48, batch_size=256)
    return sum(a == b for a, b in zip(decoded, sentences)) / len(sentences)


def build_llm(encoder, decoder, loss_type: str, seed: int) -> SonarLLMForCausalSentenceModeling:
    torch.manual_seed(seed)
    config = SonarLLMConfig(
        llama_config=llama_preset("100M", hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                  num_attention_heads=4, head_dim=64),
        encoder_config=encoder.config.to_dict(), decoder_config=decoder.config.to_dict(), embed_dim=256,
        loss_type=loss_type,
    )  # fmt: skip
    model = SonarLLMForCausalSentenceModeling(config)
    model.sonar_encoder.load_state_dict(encoder.state_dict())
    model.sonar_decoder.load_state_dict(decoder.state_dict())
    model.tokenizer = encoder.tokenizer
    model.generation_config.max_length = 48
    return model


def document_batch(stories, index, table, targets, positions):
    """(B, T, d) embeddings, mask and (B, T, L) labels for stories given as sentence indices."""
    docs = [stories[i] for i in positions]
    width = max(len(d) for d in docs)
    length = max(len(targets[s]) for d in docs for s in d)
    embeddings = torch.zeros(len(docs), width, table.shape[1])
    mask = torch.zeros(len(docs), width, dtype=torch.long)
    labels = torch.full((len(docs), width, length), -100, dtype=torch.long)
    for b, doc in enumerate(docs):
        embeddings[b, : len(doc)] = table[doc]
        mask[b, : len(doc)] = 1
        for t, s in enumerate(doc):
            labels[b, t, : len(targets[s])] = torch.tensor(targets[s])
    labels[:, 0] = -100
    return embeddings, mask, labels


def train_llm(model, stories, table, targets, steps: int, seed: int) -> list[float]:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    rng = random.Random(seed)
    model.train()
    losses = []
    for step in range(steps):
        batch = document_batch(stories, None, table, targets, rng.sample(range(len(stories)), 16))
        loss = model(*batch[:2], labels=batch[2]).loss
        for group in optimizer.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if (step + 1) % 200 == 0:
            print(f"  {model.config.loss_type} step {step + 1}: loss {sum(losses[-200:]) / 200:.4f}", flush=True)
    model.eval()
    return losses


@torch.no_grad()
def heldout_token_ce(model, stories, table, targets) -> float:
    """Token CE through the frozen decoder (the paper's objective), whatever loss trained the model."""
    loss_type = model.config.loss_type
    model.config.loss_type = "ce"
    total, count = 0.0, 0
    for start in range(0, len(stories), 64):
        batch = document_batch(stories, None, table, targets, range(start, min(start + 64, len(stories))))
        out = model(*batch[:2], labels=batch[2])
        total += out.loss.item() * out.num_target_tokens.item()
        count += out.num_target_tokens.item()
    model.config.loss_type = loss_type
    return total / count


def nlg_metrics(model, stories_text: list[list[str]]) -> dict[str, float]:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    class NoWordNet:  # METEOR's synonym stage needs the WordNet download; exact and stem stages remain
        def synsets(self, *args, **kwargs):
            return []

    prompts = [s[:2] for s in stories_text]
    references = [s[2] for s in stories_text]
    out = model.generate(prompts, max_new_sentences=1, num_beams=5)
    hypotheses = [s[0] if s else "" for s in out.sentences]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    smooth = SmoothingFunction().method4
    bleu = rouge = meteor = 0.0
    for hyp, ref in zip(hypotheses, references):
        bleu += sentence_bleu([ref.split()], hyp.split(), smoothing_function=smooth) if hyp else 0.0
        rouge += scorer.score(ref, hyp)["rougeL"].fmeasure
        meteor += meteor_score([ref.split()], hyp.split(), wordnet=NoWordNet()) if hyp else 0.0
    n = len(references)
    return {"BLEU": 100 * bleu / n, "ROUGE-L": 100 * rouge / n, "METEOR": 100 * meteor / n,
            "examples": list(zip(prompts[:3], hypotheses[:3], references[:3]))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "sonar_llm_hf" / "demo_model"))
    parser.add_argument("--stories", type=int, default=20000)
    parser.add_argument("--minutes-sonar", type=float, default=8.0)
    parser.add_argument("--llm-steps", type=int, default=800)
    parser.add_argument("--eval-stories", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.time()

    # 1. the corpus
    train_stories, heldout_stories = split_corpus(generate_corpus(args.stories, args.seed), 0.1, args.seed)
    train_sentences = sorted({s for story in train_stories for s in story} | {EOS, BEGIN})
    heldout_sentences = sorted({s for story in heldout_stories for s in story})
    unseen = [s for s in heldout_sentences if s not in set(train_sentences)]
    print(f"corpus: {len(train_stories)} train / {len(heldout_stories)} held-out stories, "
          f"{len(train_sentences)} distinct training sentences, {len(unseen)} held-out sentences never seen")  # fmt: skip

    # 2. tokenizer and miniature SONAR
    work = Path(args.output).with_name(Path(args.output).name + ".build")
    tokenizer = build_tiny_tokenizer(work, sentences=train_sentences, vocab_size=1000)
    encoder, decoder, sonar_steps = train_sonar(tokenizer, train_sentences, args.minutes_sonar, args.seed)
    rng = random.Random(args.seed)
    probe = rng.sample(heldout_sentences, min(1000, len(heldout_sentences)))
    sonar_exact = exact_match(encoder, decoder, probe)
    unseen_exact = exact_match(encoder, decoder, unseen[:1000]) if unseen else float("nan")
    print(f"miniature SONAR: {sonar_steps} steps, held-out exact match {sonar_exact:.1%} "
          f"(never-seen sentences {unseen_exact:.1%})", flush=True)  # fmt: skip

    # 3. SONAR-LLM with CE and with MSE, same data, steps and seed
    vocabulary = {s: i for i, s in enumerate(sorted(set(train_sentences) | set(heldout_sentences)))}
    sentences = sorted(vocabulary, key=vocabulary.get)
    table = encoder.encode(sentences, batch_size=512)
    targets = encode_target(tokenizer, sentences, "eng_Latn")
    as_ids = lambda stories: [[vocabulary[s] for s in story] + [vocabulary[EOS]] for story in stories]  # noqa: E731
    train_ids, heldout_ids = as_ids(train_stories), as_ids(heldout_stories[: args.eval_stories])
    results = {"sonar_exact_match": sonar_exact, "sonar_exact_match_unseen": unseen_exact, "sonar_steps": sonar_steps}
    models = {}
    for loss_type in ("ce", "mse"):
        model = build_llm(encoder, decoder, loss_type, args.seed)
        train_llm(model, train_ids, table, targets, args.llm_steps, args.seed)
        metrics = nlg_metrics(model, heldout_stories[: args.eval_stories])
        metrics["token_ce"] = heldout_token_ce(model, heldout_ids, table, targets)
        results[loss_type] = metrics
        models[loss_type] = model
        print(f"{loss_type}: {json.dumps({k: v for k, v in metrics.items() if k != 'examples'})}", flush=True)

    # 4. the table, and the CE model as the demo
    print("\n| objective | held-out token CE | BLEU | ROUGE-L | METEOR |\n|---|---|---|---|---|")
    for loss_type, name in (("ce", "SONAR-LLM (token CE, the paper)"), ("mse", "MSE on embeddings (LCM baseline)")):
        m = results[loss_type]
        print(f"| {name} | {m['token_ce']:.3f} | {m['BLEU']:.1f} | {m['ROUGE-L']:.1f} | {m['METEOR']:.1f} |")
    demo = models["ce"]
    demo.generation_config.max_length = 48
    # After 800 steps the miniature rarely predicts the end sentence confidently: cap the demo's continuations.
    demo.generation_config.max_new_sentences = 10
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    demo.save_pretrained(output)
    tokenizer.save_pretrained(output)
    results["minutes"] = (time.time() - t0) / 60
    for model in results:
        if isinstance(results[model], dict):
            results[model]["examples"] = results[model].get("examples", [])
    (output / "demo_world_results.json").write_text(json.dumps(results, indent=1))
    if args.report:
        Path(args.report).write_text(json.dumps(results, indent=1))
    print(f"saved the demo model to {output} ({results['minutes']:.1f} min in all)")


if __name__ == "__main__":
    main()
