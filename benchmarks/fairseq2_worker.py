"""The fairseq2 side of `bench_fairseq2.py`: Meta's own SONAR and the reference SONAR-LLM loop, timed.

Runs in the reference environment (fairseq2 0.8.1 + sonar-space 0.5.0 + transformers 4.x, see
../shared/tools/reference-env.sh), never imports this package, and is started by `bench_fairseq2.py`:

    REFENV/bin/python benchmarks/fairseq2_worker.py SPEC.json

SPEC names a work folder, the sizes, the SentencePiece model and the inputs. The worker
1. builds a SONAR text encoder and decoder with sonar's own factories (seeded random weights; the decoder's token
   rows are shaped so that tokens vary and every sentence has the same length, see `shape_decoder_rows`) and saves
   them in the published layout (`{"model": fairseq2 state dict}`), plus a SONAR-LLM backbone (`LlamaForCausalLM`
   with the reference's `forward_proj`/`reverse_proj`) as a reference training checkpoint
   (`{"model_state_dict": ...}`, without the bundled decoder copy) and its `SonarLLM_*.json`;
2. times, fp32, on the spec's thread count: beam search with fairseq2's `BeamSearchSeq2SeqGenerator` (what
   `EmbeddingToTextModelPipeline.predict` runs) one embedding at a time and all at once;
   `TextToEmbeddingModelPipeline.predict` one sentence at a time and all at once; and FusionBrainLab/SONAR-LLM's
   `generate.py` loop restated on those two pipelines (full backbone recompute per sentence, one decode, one
   re-encode, the end-sentence cosine);
3. writes `fairseq2.json` (seconds, ids in fairseq2's numbering, scores, texts) and `fairseq2_tensors.pt`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from fairseq2.data.tokenizers import VocabularyInfo
from fairseq2.generation.beam_search.generator import BeamSearchSeq2SeqGenerator
from fairseq2.models.nllb.tokenizer import NllbTokenizerConfig, load_nllb_tokenizer
from fairseq2.nn import BatchLayout
from sonar.inference_pipelines.text import EmbeddingToTextModelPipeline, TextToEmbeddingModelPipeline
from sonar.models.sonar_text.config import SonarTextDecoderConfig, SonarTextEncoderConfig
from sonar.models.sonar_text.factory import SonarTextDecoderFactory, SonarTextEncoderFactory
from sonar.models.sonar_translation.model import DummyEncoderModel, SonarEncoderDecoderModel
from timing import timed  # benchmarks/timing.py, beside this script
from transformers import LlamaConfig, LlamaForCausalLM

LANG = "eng_Latn"


class Projector(torch.nn.Module):
    """The reference's projector: one linear layer with bias, attribute `linear` (it names the checkpoint keys).

    Deliberately the same as in tests/fixtures/make_reference_fixtures.py: both scripts run alone in the reference
    env (fairseq2, transformers 4), where this package cannot be imported."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return self.linear(x)


class Backbone(torch.nn.Module):
    """The reference wrapper's trained parts, under its attribute names."""

    def __init__(self, llama_config: dict, embed_dim: int) -> None:
        super().__init__()
        self.llama_model = LlamaForCausalLM(LlamaConfig(**llama_config))
        self.forward_proj = Projector(embed_dim, llama_config["hidden_size"])
        self.reverse_proj = Projector(llama_config["hidden_size"], embed_dim)

    def next_embedding(self, embeddings: torch.Tensor) -> torch.Tensor:
        """generate.py's `inference_step` before decoding: the whole context recomputed, last position projected."""
        out = self.llama_model(inputs_embeds=self.forward_proj(embeddings.unsqueeze(0)), output_hidden_states=True)
        return self.reverse_proj(out.hidden_states[-1][0, -1].unsqueeze(0))  # (1, embed_dim)


def shape_decoder_rows(decoder, text_rows: int) -> None:
    """Make every sentence plain text of a fixed length, as `benchmarks/common.py` does for our side.

    The rows the tokenizer cannot decode (past `text_rows`: the language and data tags, and the rest of the 256k
    table) and `</s>` are zeroed in the tied token table. Their logit is then exactly 0, while each hypothesis' best
    text tokens score well above 0 (a random table gives symmetric logits over thousands of text rows), so
    sentences hold text and end only where `</s>` is forced, at the last position. A random decoder still repeats
    one token per sentence (REFERENCE.md section 7); the cost of a beam step does not depend on which tokens win.
    """
    with torch.no_grad():
        weight = decoder.decoder_frontend.embed.weight
        weight[text_rows:] = 0
        weight[3] = 0  # </s> (fairseq2 numbering)
        if decoder.final_proj.weight is not weight:
            decoder.final_proj.weight.copy_(weight)


def build_sonar(spec: dict, vocab_size: int):
    size = spec["sonar"]
    vocab_info = VocabularyInfo(size=vocab_size, unk_idx=1, bos_idx=2, eos_idx=3, pad_idx=1)
    common = dict(model_dim=size["d_model"], vocab_info=vocab_info, learned_pos=False, no_scale_embedding=False,
                  emb_dropout_p=0.1, attention_dropout_p=0.1, activation_dropout_p=0.1,
                  no_token_positional_embeddings=False, activation_fn="ReLU", num_encoder_layers=size["layers"],
                  num_decoder_layers=size["layers"], num_encoder_attn_heads=size["heads"],
                  num_decoder_attn_heads=size["heads"], ffn_inner_dim=size["ffn"])  # fmt: skip
    torch.manual_seed(spec["seed"])
    encoder = SonarTextEncoderFactory(
        SonarTextEncoderConfig(max_seq_len=512, pooling="mean", normalize_before=False, _from_fairseq=True, **common)
    ).create_model()
    decoder = SonarTextDecoderFactory(
        SonarTextDecoderConfig(max_seq_len=512, normalize_before=True, **common)
    ).create_model()
    return encoder.eval(), decoder.eval()


def beam_search(decoder, tokenizer, embeddings: torch.Tensor, beam_size: int, max_seq_len: int):
    """What `EmbeddingToTextModelPipeline.predict` runs on one batch: ids after `[</s>, lang]` and scores."""
    model = SonarEncoderDecoderModel(DummyEncoderModel(), decoder).eval()
    generator = BeamSearchSeq2SeqGenerator(model, tokenizer.vocab_info, beam_size=beam_size, max_seq_len=max_seq_len)
    prompt = tokenizer.create_encoder(lang=LANG, mode="target").prefix_indices  # [</s>, __lang__]
    prompts = prompt.unsqueeze(0).expand(embeddings.shape[0], -1)
    output = generator(embeddings, BatchLayout.of(embeddings), prompts, BatchLayout.of(prompts))
    return [h[0].seq.tolist() for h in output.hypotheses], [float(h[0].score) for h in output.hypotheses]


def reference_generate(backbone, to_embedding, to_text, eos, prompt, new_sentences, threshold, max_seq_len):
    """FusionBrainLab/SONAR-LLM generate.py's loop (`predict_next_text`), restated on fairseq2's pipelines."""
    sentences = list(prompt)
    embeddings = to_embedding.predict(sentences, source_lang=LANG)
    generated = []
    while len(sentences) <= 32 and len(generated) < new_sentences:
        predicted = backbone.next_embedding(embeddings)
        text = to_text.predict(predicted, target_lang=LANG, max_seq_len=max_seq_len)[0]
        reencoded = to_embedding.predict([text], source_lang=LANG)
        stop = torch.nn.functional.cosine_similarity(reencoded, eos, dim=1).item() >= threshold
        embeddings = torch.cat([embeddings, reencoded])
        if stop:
            break
        sentences.append(text)
        generated.append(text)
    return generated


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    torch.set_grad_enabled(False)
    work = Path(spec["work"])
    tokenizer = load_nllb_tokenizer(Path(spec["spm"]), NllbTokenizerConfig(langs=spec["languages"], default_lang=LANG))
    vocab_size = spec["sonar"]["vocab"]
    text_rows = tokenizer.vocab_info.size - 205  # 202 languages + 3 data tags follow the pieces
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    # 1. models, saved in the published layouts
    (encoder, decoder), results["build_s"] = timed(lambda: build_sonar(spec, vocab_size))
    shape_decoder_rows(decoder, text_rows)
    torch.save({"model": encoder.state_dict()}, work / "sonar_text_encoder.pt")
    torch.save({"model": decoder.state_dict()}, work / "sonar_text_decoder.pt")
    llama = {
        **spec["llama_config"],
        "vocab_size": 128256,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "pad_token_id": 128001,
    }
    torch.manual_seed(spec["seed"] + 1)
    backbone = Backbone(llama, spec["sonar"]["d_model"]).eval()
    torch.save({"model_state_dict": backbone.state_dict(), "global_step": 0}, work / "checkpoint_step_0.pt")
    (work / "SonarLLM_bench.json").write_text(
        json.dumps({"llama_config": spec["llama_config"], "embed_dim": spec["sonar"]["d_model"]}, indent=1)
    )

    to_embedding = TextToEmbeddingModelPipeline(encoder, tokenizer)
    to_text = EmbeddingToTextModelPipeline(decoder, tokenizer)
    beam, max_seq_len = spec["num_beams"], 2 + spec["tokens"]
    texts = spec["encode_texts"]

    # 2. encode: one sentence at a time, then all at once (the pipeline's own batching)
    to_embedding.predict(texts[:1], source_lang=LANG)  # warm-up

    def one_at_a_time():
        return torch.cat([to_embedding.predict([t], source_lang=LANG, batch_size=1) for t in texts])

    def all_at_once():
        return to_embedding.predict(texts, source_lang=LANG, batch_size=len(texts))

    singles, results["encode_b1_s"] = timed(one_at_a_time, spec["encode_repeats"])
    batched, results["encode_bn_s"] = timed(all_at_once, spec["encode_repeats"])
    results["encode_ids"] = [tokenizer.create_encoder(lang=LANG, mode="source")(t).tolist() for t in texts]

    # 3. decode the batched embeddings: one at a time (the reference loop's way) and all at once
    inputs = batched[: spec["decode_inputs"]]
    beam_search(decoder, tokenizer, inputs[:1], beam, min(max_seq_len, 6))  # warm-up
    one = spec["decode_b1_inputs"]
    single, results["decode_b1_s"] = timed(
        lambda: [beam_search(decoder, tokenizer, inputs[i : i + 1], beam, max_seq_len) for i in range(one)]
    )
    results["decode_b1_ids"] = [ids[0] for ids, _ in single]
    results["decode_b1_scores"] = [scores[0] for _, scores in single]
    (ids, scores), results["decode_bn_s"] = timed(lambda: beam_search(decoder, tokenizer, inputs, beam, max_seq_len),
                                             spec["decode_repeats"])  # fmt: skip
    results["decode_bn_ids"], results["decode_bn_scores"] = ids, scores

    # 4. the reference generation loop, one prompt at a time
    eos = to_embedding.predict([spec["eos_sentence"]], source_lang=LANG)
    reference_generate(
        backbone, to_embedding, to_text, eos, spec["prompts"][0], 1, 2.0, min(max_seq_len, 6)
    )  # warm-up
    results["generate_texts"], results["generate_s_per_prompt"] = [], []
    for prompt in spec["prompts"][: spec["reference_prompts"]]:
        generated, seconds = timed(
            lambda: reference_generate(
                backbone, to_embedding, to_text, eos, prompt, spec["sentences"], spec["eos_threshold"], max_seq_len
            )
        )
        results["generate_texts"].append(generated)
        results["generate_s_per_prompt"].append(seconds)

    tensors = {"encode_b1": singles, "encode_bn": batched, "decode_inputs": inputs}
    torch.save({name: tensor.contiguous() for name, tensor in tensors.items()}, work / "fairseq2_tensors.pt")
    (work / "fairseq2.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
