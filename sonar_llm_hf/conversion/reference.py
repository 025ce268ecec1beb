"""The reference SONAR-LLM rebuilt as the reference code builds it, to verify a conversion against.

The converted model comes from our translation of the backbone settings (legacy RoPE keys, head_dim, key/value
heads, a one-row vocabulary) into our own classes; checking it against a model built from that same translation
would miss any mistake in it, such as a head split, RoPE setting or norm epsilon that the translation changed. So
the reference is rebuilt independently, as FusionBrainLab/SONAR-LLM builds it: transformers'
`LlamaForCausalLM(LlamaConfig(**llama_config))` with its token vocabulary, two `nn.Linear` projectors, loaded
strictly from the checkpoint's own keys, and run as the reference runs it (`inputs_embeds=forward_proj(E)`,
`output_hidden_states=True).hidden_states[-1]`, `reverse_proj`) on a few documents embedded by SONAR.
"""

from __future__ import annotations

import copy

import torch
from huggingface_hub.dataclasses import strict
from huggingface_hub.errors import StrictDataclassError
from transformers import LlamaConfig, LlamaForCausalLM

from .checkpoints import ConversionError

TOLERANCE = 1e-5  # fp32 max abs difference
DEAD_KEYS = {"model.embed_tokens.weight", "lm_head.weight"}  # never trained; may be absent from a Hub folder
DOCUMENTS = [
    ["Once upon a time, there was a little girl named Lily.", "She loved to play outside in the sun.",
     "One day, she saw a big red ball in the park.", "She ran to get it."],
    ["Tom had a small dog.", "The dog liked to bark at birds."],
    ["The sky was dark and the wind was cold.", "Mia put on her warm coat.", "Then she went out to find her cat.",
     "The cat was hiding under the old blue car.", "Mia smiled and picked it up.", "End of sequence."],
]  # fmt: skip


@strict
class _LlamaConfigWithoutHeadCheck(LlamaConfig):
    """transformers 5 refuses hidden % heads != 0, which 4.x (the reference's) allowed and the 600M checkpoint has."""

    def validate_architecture(self):
        pass


def reference_llama_config(llama_config: dict, vocab_size: int | None) -> LlamaConfig:
    settings = copy.deepcopy(llama_config)  # transformers writes `rope_theta` into the `rope_scaling` it is given
    if "vocab_size" not in settings and vocab_size is not None:
        settings["vocab_size"] = vocab_size  # the reference sets it from the Llama-3 tokenizer
    try:
        return LlamaConfig(**settings)
    except (ValueError, StrictDataclassError) as error:
        if "validate_architecture" not in str(error):
            raise ConversionError(f"LlamaConfig refuses the reference's llama_config: {error}") from error
        return _LlamaConfigWithoutHeadCheck(**settings)


class ReferenceSonarLLM(torch.nn.Module):
    """`LlamaForCausalLM` between `forward_proj` and `reverse_proj`, as the reference's wrapper holds them."""

    def __init__(self, llama_config: dict, state: dict):
        super().__init__()
        embed = state.get("llama_model.model.embed_tokens.weight")
        config = reference_llama_config(llama_config, None if embed is None else embed.shape[0])
        forward, reverse = state["forward_proj.linear.weight"], state["reverse_proj.linear.weight"]
        self.llama_model = LlamaForCausalLM(config)
        self.forward_proj = torch.nn.Linear(forward.shape[1], forward.shape[0])
        self.reverse_proj = torch.nn.Linear(reverse.shape[1], reverse.shape[0])
        self.dead_keys_absent = sorted(self._load(state))
        self.eval()

    def _load(self, state: dict) -> set[str]:
        llama = {k[len("llama_model.") :]: v for k, v in state.items()
                 if k.startswith("llama_model.") and not k.endswith("rotary_emb.inv_freq")}  # fmt: skip
        try:
            missing, unexpected = self.llama_model.load_state_dict(llama, strict=False)
            for name in ("forward_proj", "reverse_proj"):
                getattr(self, name).load_state_dict({k.split(".")[-1]: v for k, v in state.items()
                                                     if k.startswith(f"{name}.linear.")}, strict=True)  # fmt: skip
        except RuntimeError as error:  # a shape that does not fit the reference's llama_config
            raise ConversionError(f"The checkpoint does not load into the reference's own Llama: {error}") from error
        if unexpected or set(missing) - DEAD_KEYS:
            raise ConversionError(
                "The checkpoint does not load strictly into the reference's own Llama: missing "
                f"{sorted(set(missing) - DEAD_KEYS)}, unexpected {sorted(unexpected)}."
            )
        return set(missing)

    @torch.no_grad()
    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        hidden = self.llama_model(inputs_embeds=self.forward_proj(embeddings), output_hidden_states=True)
        return self.reverse_proj(hidden.hidden_states[-1])


def verify_against_reference(model, state: dict, llama_config: dict, tolerance: float = TOLERANCE) -> dict:
    """Predictions of the converted `model` (fp32) vs the independent reference build, on `DOCUMENTS` embedded by
    the model's SONAR encoder and on a random batch; a ConversionError above `tolerance`. -> a small report."""
    reference = ReferenceSonarLLM(llama_config, state)
    probes = [model.sonar_encoder.encode(document)[None].float() for document in DOCUMENTS]
    generator = torch.Generator().manual_seed(0)
    probes.append(torch.randn(2, 5, model.config.embed_dim, generator=generator) * 0.05)
    worst = 0.0
    with torch.no_grad():
        for probe in probes:
            ours = model(probe).predicted_embeddings
            difference = float((ours - reference(probe)).abs().max())
            worst = difference if not difference <= worst else worst  # a NaN is kept, not swallowed by max()
    del reference
    if not worst <= tolerance:
        raise ConversionError(
            f"Converted predictions differ from the reference build (transformers' LlamaForCausalLM from the "
            f"reference's llama_config, loaded from the checkpoint's own keys) by {worst:.3g} > {tolerance:g}: the "
            "converted architecture is not the checkpoint's (heads, RoPE, norm epsilon?)."
        )
    return {"max_abs_diff": worst, "documents": len(DOCUMENTS)}
