"""Fine-tuning helpers: LoRA configurations that never touch SONAR by accident, and model loading for training."""

from __future__ import annotations

# Full-match regexes over module names (PEFT applies a string `target_modules` with re.fullmatch).
BACKBONE_LORA_TARGETS = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
SONAR_DECODER_LORA_TARGETS = (
    r"sonar_decoder\.decoder\.layers\.\d+\.((self_attn|encoder_attn)\.(q|k|v|out)_proj|fc1|fc2)"
)
# Unique names: PEFT matches `modules_to_save` by suffix, and "out_proj" would also catch every SONAR attention.
PROJECTIONS = ["sentence_in_proj", "sentence_out_proj"]


def lora_config(r: int = 16, alpha: int = 32, dropout: float = 0.05, sonar_decoder: bool = False):
    """LoRA on the backbone's attention and MLP projections, the sentence projections trained in full.

    `"all-linear"` would also hit the frozen SONAR decoder; here it is opt-in (`sonar_decoder=True`, the paper's
    v2 ablation of adapting the decoder). `task_type=None` keeps `forward` and `generate` unchanged.
    """
    from peft import LoraConfig

    targets = BACKBONE_LORA_TARGETS if not sonar_decoder else f"({BACKBONE_LORA_TARGETS})|({SONAR_DECODER_LORA_TARGETS})"
    return LoraConfig(
        task_type=None, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
        modules_to_save=list(PROJECTIONS),
    )  # fmt: skip


def unfreeze_sonar_decoder(model) -> None:
    """Train the SONAR decoder too (paper v2 §4.5): lower CE, no summarization gain reported."""
    model.config.train_sonar_decoder = True
    model.sonar_decoder.requires_grad_(True)
    model.sonar_decoder.train(model.training)


__all__ = ["lora_config", "unfreeze_sonar_decoder", "BACKBONE_LORA_TARGETS", "SONAR_DECODER_LORA_TARGETS"]
