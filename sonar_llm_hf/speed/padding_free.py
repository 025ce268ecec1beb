"""Padding-free SONAR encoding for inference: the encoder's token-wise work runs on the real tokens only.

A batch of sentences of different lengths is padded to its longest, and M2M100's encoder then runs its linear layers,
layer norms and feed-forward blocks on the padding too: for a ragged batch a fifth or more of the work, and none of
it changes the result (padding is masked out of attention and of the pooling). Here each layer works on the
(tokens, d) real tokens, and only the attention itself sees the padded (N, heads, T, head_dim) layout, into which
queries, keys and values are scattered. Same modules and weights as `M2M100Encoder.forward`, so the embeddings equal
its own to float rounding (tests/test_speed.py). `use_padding_free_encoding(encoder)` installs it on a
`SonarTextEncoder`: in eval mode, without gradients, with SDPA attention; anything else takes M2M100's forward.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.m2m_100.modeling_m2m_100 import M2M100Encoder


def packed_encoding_applies(encoder: M2M100Encoder) -> bool:
    """Inference only (dropout and layer drop would need M2M100's own loop), with SDPA attention, and without
    accelerate's hooks (`device_map` places and offloads weights in the layers' own calls, which this bypasses)."""
    return (
        not encoder.training
        and not torch.is_grad_enabled()
        and encoder.config._attn_implementation == "sdpa"
        and not any(hasattr(module, "_hf_hook") for module in encoder.modules())
    )


def _self_attention(attention, states: torch.Tensor, real: torch.Tensor, shape: tuple[int, int], mask: torch.Tensor):
    """M2M100Attention on packed (tokens, d) states: projections on real tokens, SDPA on the padded layout."""
    batch, width = shape
    heads, head_dim = attention.num_heads, attention.head_dim

    def padded(projected: torch.Tensor) -> torch.Tensor:
        return _scatter(projected, real, batch * width).view(batch, width, heads, head_dim).transpose(1, 2)

    query, key, value = (padded(proj(states)) for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
    output = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=attention.scaling)
    output = output.transpose(1, 2).reshape(batch * width, heads * head_dim)
    return attention.out_proj(output if real is None else output[real])


def _scatter(rows: torch.Tensor, real: torch.Tensor | None, total: int) -> torch.Tensor:
    """(tokens, d) -> (total, d) with zeros at padding; a batch without padding passes through."""
    if real is None:
        return rows
    full = rows.new_zeros(total, rows.shape[-1])
    full[real] = rows
    return full


def packed_encoder_states(encoder: M2M100Encoder, input_ids: torch.LongTensor, attention_mask: torch.Tensor):
    """The encoder's final states (N, T, d), zero at padding, computing every token-wise product on real tokens."""
    batch, width = input_ids.shape
    embeddings = encoder.embed_tokens(input_ids)
    states = embeddings + encoder.embed_positions(input_ids, embeddings).to(embeddings.device)
    states = states.flatten(0, 1)
    real, mask = None, None
    keep = attention_mask.bool()
    if not keep.all():
        real = keep.flatten().nonzero().squeeze(1)  # indices of real tokens in the (N * T) layout
        states = states[real]  # (tokens, d)
        mask = keep[:, None, None, :]  # (N, 1, 1, T): keys that are real tokens
    for layer in encoder.layers:
        states = states + _self_attention(
            layer.self_attn, layer.self_attn_layer_norm(states), real, (batch, width), mask
        )
        states = states + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(states))))
        if states.dtype == torch.float16:  # as M2M100EncoderLayer
            limit = torch.finfo(states.dtype).max - 1000
            states = states.clamp(-limit, limit)
    return _scatter(encoder.layer_norm(states), real, batch * width).view(batch, width, -1)


def use_padding_free_encoding(part: nn.Module) -> None:
    """Make `part.encoder` (a SONAR encoder's M2M100 stack) skip padding where that is exact; an instance attribute
    shadows `M2M100Encoder.forward`, so `restore_encoding` undoes it."""
    encoder = part.encoder
    plain = type(encoder).forward

    def forward(input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        simple = (
            input_ids is not None
            and attention_mask is not None
            and inputs_embeds is None
            and not any(kwargs.get(name) for name in ("output_attentions", "output_hidden_states"))
        )
        if simple and packed_encoding_applies(encoder):
            return BaseModelOutput(last_hidden_state=packed_encoder_states(encoder, input_ids, attention_mask))
        return plain(
            encoder, input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )

    encoder.forward = forward


def restore_encoding(part: nn.Module) -> None:
    if hasattr(part, "encoder") and "forward" in part.encoder.__dict__:
        del part.encoder.forward


__all__ = ["packed_encoder_states", "packed_encoding_applies", "use_padding_free_encoding", "restore_encoding"]
