"""The reference SONAR-LLM algorithms (FusionBrainLab/SONAR-LLM), restated once for the parity tests and the
benchmarks.

- `reference_loss`: `SonarLossWrapper.forward` of `train_sonarllm.py` (REFERENCE.md §2.5): a Python loop over
  sentences, tokenizing on the fly, full-vocabulary logits, the duplicated final `</s>` target (optional), and
  `CrossEntropyLoss(ignore_index=pad)` averaged over every token of the micro-batch.
- `reference_generate`: `generate.py` (§2.6): one prompt, the whole backbone recomputed every sentence (no cache,
  no mask), SONAR decoding, re-encoding, the cosine test against enc("End of sequence.").
- `reference_decode` + `full_cross_attention`: SONAR's `EmbeddingToTextModelPipeline` on one embedding at
  fairseq2's cost (torch's products, full cross-attention, top-k over all beams x vocabulary), for timing.
- `reference_encode`: SONAR's `TextToEmbeddingModelPipeline` (padded batches in input order, fairseq2's pooling);
  `plain_torch_products`: torch's BLAS products only, the baseline of every "oneDNN is exact" claim.

They run on our SONAR modules (HF ids) so that only the SONAR-LLM algorithm is under test; SONAR itself is checked
against fairseq2's own outputs (`tests/fixtures/reference/`), and `benchmarks/bench_fairseq2.py` times fairseq2 itself.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from transformers.models.m2m_100.modeling_m2m_100 import M2M100Attention

from ..models.generation_sonar_text import fairseq2_beam_search
from ..models.modeling_sonar_text import SonarSentenceCrossAttention
from ..models.tokenization_sonar import decode_ids, encode_target, suppressed_token_ids

# The reference pads token tensors with fairseq2's id 0 (<pad>) and ignores it in the loss; in HF ids that is 1.
HF_PAD = 1
HF_EOS = 2


def reference_backbone(model, embeddings: torch.Tensor) -> torch.Tensor:
    """`reverse_proj(llama(inputs_embeds=forward_proj(E)).hidden_states[-1])`, no attention mask."""
    hidden = model.model(inputs_embeds=model.sentence_in_proj(embeddings), use_cache=False).last_hidden_state
    return model.sentence_out_proj(hidden)


def reference_loss(
    model, embeddings, documents, lang="eng_Latn", max_len=256, duplicate_final_eos=True, return_count=False
):
    """Mean token CE over all sentence pairs of a zero-padded micro-batch, as the reference computes it."""
    tokenizer = model.tokenizer
    predicted = reference_backbone(model, embeddings)  # (B, T, d)
    preds, token_rows = [], []
    for b, sentences in enumerate(documents):
        for k in range(1, len(sentences)):
            preds.append(predicted[b, k - 1])
            token_rows.append(encode_target(tokenizer, [sentences[k]], lang)[0])  # [lang] pieces </s>
    pred = torch.stack(preds)
    # decoder input `[</s>, lang, t.., </s>]`, labels `[lang, t.., </s>, </s>]` (the reference's extra target)
    inputs = [[HF_EOS, *row] for row in token_rows]
    labels = [[*row, HF_EOS] for row in token_rows]
    if not duplicate_final_eos:
        inputs = [row[:-1] for row in inputs]
        labels = [row[:-1] for row in labels]
    width = min(max(len(r) for r in inputs), max_len)
    dec_in = torch.full((len(inputs), width), HF_PAD, dtype=torch.long)
    dec_labels = torch.full((len(inputs), width), HF_PAD, dtype=torch.long)
    for i, (x, y) in enumerate(zip(inputs, labels)):
        dec_in[i, : len(x[:width])] = torch.tensor(x[:width])
        dec_labels[i, : len(y[:width])] = torch.tensor(y[:width])
    hidden = model.sonar_decoder.decoder_hidden_states(pred, dec_in)
    logits = model.sonar_decoder.lm_head(hidden)  # full (N, L, V) logits, as the reference materialises them
    loss = nn.CrossEntropyLoss(ignore_index=HF_PAD)(
        logits.reshape(-1, logits.shape[-1]).float(), dec_labels.reshape(-1)
    )
    return (loss, int((dec_labels != HF_PAD).sum())) if return_count else loss


@contextmanager
def plain_torch_products():
    """Every matrix product on torch's default CPU path (BLAS), as on a machine or build without oneDNN: our oneDNN
    routes off (`sonar_llm_hf.speed.onednn.onednn_op`, which every route asks) and torch's own oneDNN dispatch
    disabled. The baseline of the claims that a faster kernel is exact: a baseline that itself ran oneDNN could not
    tell oneDNN's errors apart."""
    from ..speed import onednn

    original, enabled = onednn.onednn_op, torch.backends.mkldnn.enabled
    onednn.onednn_op = lambda: None
    torch.backends.mkldnn.enabled = False
    try:
        assert not onednn.onednn_applies(nn.Linear(2, 2))  # the package now says oneDNN does not apply
        yield
    finally:
        onednn.onednn_op, torch.backends.mkldnn.enabled = original, enabled


@torch.no_grad()
def reference_encode(encoder, token_ids: list[list[int]], batch_size: int | None = None) -> torch.Tensor:
    """SONAR's `TextToEmbeddingModelPipeline` on tokenized sentences: batches in input order, padded, the whole
    M2M100 encoder run over the padding with torch's products, then fairseq2's mean pooling restated
    (sum over real tokens / (length + 1e-7)). None of `encode`'s sorting, packing or oneDNN paths."""
    batch_size = batch_size or len(token_ids)
    pad = encoder.config.pad_token_id
    pooled = []
    with plain_torch_products():
        for start in range(0, len(token_ids), batch_size):
            rows = token_ids[start : start + batch_size]
            width = max(len(row) for row in rows)
            ids = torch.tensor([[*row, *[pad] * (width - len(row))] for row in rows])  # (n, T)
            real = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])  # (n, T)
            states = encoder.encoder(input_ids=ids, attention_mask=real).last_hidden_state  # (n, T, d)
            summed = (states * real.unsqueeze(-1).to(states.dtype)).sum(dim=1)  # (n, d)
            pooled.append(summed / (real.sum(dim=1, keepdim=True).to(states.dtype) + 1e-7))
    return torch.cat(pooled)


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
def reference_generate(
    model, prompt_sentences, lang="eng_Latn", max_sentences=32, threshold=0.98, max_new_sentences=None,
    at_reference_cost=False, return_predictions=False, **decode_kwargs,
) -> list[str] | tuple[list[str], list[torch.Tensor]]:  # fmt: skip
    """One prompt, full recompute each step, re-encoding, stop on the end sentence. Returns the new sentences (and,
    with `return_predictions=True`, the backbone's predicted embedding of each).

    `at_reference_cost=True` decodes with `reference_decode` (fairseq2's costs) instead of our decoder's `decode`;
    `max_new_sentences` caps the loop for timing.
    """
    encoder, decoder = model.sonar_encoder, model.sonar_decoder
    eos = encoder.encode([model.config.eos_sentence], lang=lang)[0]  # once per run, as the reference
    sentences = list(prompt_sentences)
    embeddings = list(encoder.encode(sentences, lang=lang))
    new, predictions = [], []
    while len(sentences) <= max_sentences and (max_new_sentences is None or len(new) < max_new_sentences):
        predicted = reference_backbone(model, torch.stack(embeddings).unsqueeze(0))[0, -1]
        if at_reference_cost:
            text = reference_decode(decoder, predicted, model.tokenizer, lang=lang, **decode_kwargs)
        else:
            text = decoder.decode(predicted.unsqueeze(0), lang=lang, **decode_kwargs)[0]
        if text.strip():
            reencoded = encoder.encode([text], lang=lang)[0]
        else:  # the reference encodes an empty sentence as `[lang] </s>`
            lang_id = model.tokenizer.convert_tokens_to_ids(lang)
            reencoded = encoder.encode_token_ids([[lang_id, HF_EOS]])[0]
        if torch.nn.functional.cosine_similarity(reencoded, eos, dim=0) >= threshold:
            break
        sentences.append(text)
        embeddings.append(reencoded)
        new.append(text)
        predictions.append(predicted)
    return (new, predictions) if return_predictions else new
