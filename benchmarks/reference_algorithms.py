"""The reference SONAR-LLM algorithms (FusionBrainLab/SONAR-LLM), restated on our modules for side-by-side timing.

- `reference_generate`: `generate.py`: one prompt at a time, the whole backbone recomputed every sentence (no
  cache), SONAR beam search on one embedding, re-encoding of the decoded sentence, the cosine test. Its SONAR decode
  costs what fairseq2's does: torch's default matrix products, full cross-attention, and fairseq2's top-k over all
  beams x vocabulary (none of our decoder's shortcuts, which give the same tokens).
- `reference_train_loss`: `SonarLossWrapper.forward`: a Python loop over sentences, tokenizing on the fly, full
  256k-vocabulary logits, one mean cross-entropy.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers.models.m2m_100.modeling_m2m_100 import M2M100Attention

from sonar_llm_hf.generation_sonar_text import fairseq2_beam_search
from sonar_llm_hf.modeling_sonar_text import SonarSentenceCrossAttention
from sonar_llm_hf.tokenization_sonar import decode_ids, encode_target, suppressed_token_ids


@contextmanager
def full_cross_attention(decoder):
    """fairseq2 projects queries and attends even to a one-vector memory: run M2M100's full cross-attention."""
    layers = [m for m in decoder.modules() if isinstance(m, SonarSentenceCrossAttention)]
    for layer in layers:
        layer.__class__ = M2M100Attention
    try:
        yield
    finally:
        for layer in layers:
            layer.__class__ = SonarSentenceCrossAttention


def reference_decode(decoder, embedding: torch.Tensor, tokenizer, num_beams=5, max_length=256, lang="eng_Latn") -> str:
    """SONAR's `EmbeddingToTextModelPipeline` on one embedding: fairseq2's beam search at fairseq2's cost."""
    prompt = decoder.decoder_prompt(1, lang, tokenizer)
    suppress = suppressed_token_ids(tokenizer, decoder.config.vocab_size)
    with full_cross_attention(decoder):
        tokens, _ = fairseq2_beam_search(decoder, embedding[None], prompt, beam_size=num_beams, max_length=max_length,
                                         suppress_ids=suppress, prune_rows=False)  # fmt: skip
    return decode_ids(tokenizer, tokens)[0]


@torch.no_grad()
def reference_generate(model, prompt_sentences, new_sentences: int, threshold=0.98, **decode_kwargs) -> list[str]:
    encoder, decoder = model.sonar_encoder, model.sonar_decoder
    eos = encoder.encode([model.config.eos_sentence])[0]  # once per run, as the reference
    sentences = list(prompt_sentences)
    embeddings = list(encoder.encode(sentences))
    generated = []
    while len(generated) < new_sentences:
        hidden = model.model(inputs_embeds=model.sentence_in_proj(torch.stack(embeddings)[None]), use_cache=False)
        predicted = model.sentence_out_proj(hidden.last_hidden_state)[0, -1]  # full recompute
        text = reference_decode(decoder, predicted, model.tokenizer, **decode_kwargs)
        reencoded = encoder.encode([text])[0] if text.strip() else eos
        if torch.nn.functional.cosine_similarity(reencoded, eos, dim=0) >= threshold:
            break
        sentences.append(text)
        embeddings.append(reencoded)
        generated.append(text)
    return generated


def reference_train_loss(model, embeddings: torch.Tensor, documents: list[list[str]]) -> tuple[torch.Tensor, int]:
    """Mean CE over all target tokens, the reference way; returns the loss and the number of target tokens."""
    hidden = model.model(inputs_embeds=model.sentence_in_proj(embeddings), use_cache=False).last_hidden_state
    predicted = model.sentence_out_proj(hidden)
    preds, rows = [], []
    for b, sentences in enumerate(documents):
        for k in range(1, len(sentences)):
            preds.append(predicted[b, k - 1])
            rows.append(encode_target(model.tokenizer, [sentences[k]], "eng_Latn")[0])  # tokenized on the fly
    width = max(len(r) for r in rows)
    decoder_input = torch.full((len(rows), width), 1, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, row in enumerate(rows):
        decoder_input[i, : len(row)] = torch.tensor([2, *row[:-1]])
        labels[i, : len(row)] = torch.tensor(row)
    with full_cross_attention(model.sonar_decoder):
        states = model.sonar_decoder.decoder_hidden_states(torch.stack(preds), decoder_input)
    logits = model.sonar_decoder.lm_head(states)  # (N, L, 256206): the full vocabulary, materialised
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1))
    return loss, int((labels != -100).sum())
