"""Fine-tuning helpers: LoRA configurations that never touch SONAR by accident, and model loading for training."""

from __future__ import annotations

import torch

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

    targets = BACKBONE_LORA_TARGETS
    if sonar_decoder:
        targets = f"({BACKBONE_LORA_TARGETS})|({SONAR_DECODER_LORA_TARGETS})"
    return LoraConfig(
        task_type=None, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets,
        modules_to_save=list(PROJECTIONS),
    )  # fmt: skip


def resolve_mixed_precision(training_args, precision: str = "auto"):
    """`TrainingArguments` with mixed precision where the hardware has it.

    `precision`: "auto" keeps an explicit `--bf16`/`--fp16` (or an `accelerate` config's mixed precision) and
    otherwise picks bf16 on CUDA GPUs that support it, fp16 on older CUDA GPUs, and full precision elsewhere;
    "bf16", "fp16" and "no" force a choice. Weights stay fp32 (autocast); the SONAR cross-entropy is computed in fp32.
    """
    import dataclasses

    if precision not in ("auto", "no", "bf16", "fp16"):
        raise ValueError(f"`precision` must be 'auto', 'no', 'bf16' or 'fp16', got {precision!r}.")
    if precision == "auto":
        if training_args.bf16 or training_args.fp16 or getattr(training_args, "mixed_precision", "no") != "no":
            return training_args
        if training_args.use_cpu or not torch.cuda.is_available():
            return training_args
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return dataclasses.replace(training_args, bf16=precision == "bf16", fp16=precision == "fp16")


def save_tokenizer_callback(tokenizer):
    """A `TrainerCallback` that writes the SONAR tokenizer into every checkpoint folder, so each one loads with
    `from_pretrained` and generates. (Passing the tokenizer as `processing_class` would do it too, but `Trainer` then
    copies its bos/eos/pad ids into the model's config and generation config, which hold sentence-level settings.)"""
    import os

    from transformers import TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    class SaveTokenizer(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
                if os.path.isdir(folder):
                    tokenizer.save_pretrained(folder)

    return SaveTokenizer()


def unfreeze_sonar_decoder(model) -> None:
    """Train the SONAR decoder too (paper v2 §4.5): lower CE, no summarization gain reported."""
    model.config.train_sonar_decoder = True
    model.sonar_decoder.requires_grad_(True)
    model.sonar_decoder.train(model.training)


__all__ = [
    "lora_config",
    "unfreeze_sonar_decoder",
    "resolve_mixed_precision",
    "save_tokenizer_callback",
    "BACKBONE_LORA_TARGETS",
    "SONAR_DECODER_LORA_TARGETS",
]
