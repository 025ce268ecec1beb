"""Fine-tune SONAR-LLM on your documents with transformers' Trainer (optionally LoRA), on one or many devices.

    python examples/finetune.py --model_name_or_path path/or/repo --dataset docs.jsonl --text_column text \
        --output_dir out --per_device_train_batch_size 8 --gradient_accumulation_steps 4 --num_train_epochs 1
    accelerate launch --config_file examples/accelerate/ddp.yaml examples/finetune.py ...   # many GPUs

--dataset is a local .jsonl/.json/.csv/.txt/.parquet file, a folder saved with `save_to_disk`, or a Hub dataset
name (with --dataset_config). Every TrainingArguments option is accepted (--learning_rate, --eval_strategy,
--save_steps, --resume_from_checkpoint (a folder, or "last"), --activation_checkpointing, --report_to ...);
mixed precision is picked for the hardware unless you say (--precision auto|no|bf16|fp16, or --bf16/--fp16).
The result (and every checkpoint folder) loads with `AutoModel.from_pretrained(output_dir)`; with --lora it is
an adapter: `PeftModel.from_pretrained(AutoModel.from_pretrained(base), output_dir)`, or a merged model with
--merge_lora.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import AutoModel, HfArgumentParser, Trainer, TrainingArguments

import sonar_llm_hf  # noqa: F401  (registers the Auto classes)
from sonar_llm_hf.data_files import load_data_file
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset
from sonar_llm_hf.training.lora import (
    lora_config,
    resolve_mixed_precision,
    save_tokenizer_callback,
    unfreeze_sonar_decoder,
)

logger = logging.getLogger("finetune")


@dataclass
class ScriptArguments:
    model_name_or_path: str = field(default=None, metadata={"help": "converted SONAR-LLM folder or Hub repo"})
    dataset: str = field(default=None, metadata={"help": "local file/folder or Hub dataset name"})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration"})
    train_split: str = field(default="train")
    eval_split: str | None = field(default=None, metadata={"help": "split for evaluation, if any"})
    eval_fraction: float = field(default=0.0, metadata={"help": "hold out this fraction for evaluation instead"})
    text_column: str = field(default="text")
    lang_column: str | None = field(default=None, metadata={"help": "column of SONAR language codes per document"})
    lang: str | None = field(default=None, metadata={"help": "language of all documents (default: the model's)"})
    max_sentences: int = field(default=32, metadata={"help": "sentences kept per document (the paper: 32)"})
    max_target_length: int = field(default=256, metadata={"help": "target tokens kept per sentence (reference: 256)"})
    max_train_samples: int | None = field(default=None)
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "skip (and count) non-text rows and unknown language codes instead of stopping"},
    )
    embedding_batch_size: int = field(default=64, metadata={"help": "sentences per SONAR encoder call"})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "processes for sentence splitting"})
    prepare_only: bool = field(
        default=False,
        metadata={"help": "compute and cache the SONAR embeddings, then exit (run once before a long multi-GPU job)"},
    )
    precision: str = field(default="auto", metadata={"help": "auto (bf16/fp16 where the GPU has it), no, bf16, fp16"})
    loss_type: str | None = field(default=None, metadata={"help": "ce, mse or ce+mse (default: the model's)",
                                                          "choices": ["ce", "mse", "ce+mse"]})  # fmt: skip
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters on the backbone + the projections"})
    lora_r: int = field(default=16)
    lora_alpha: int = field(default=32)
    lora_dropout: float = field(default=0.05)
    lora_sonar_decoder: bool = field(default=False, metadata={"help": "also put LoRA on the SONAR decoder"})
    train_sonar_decoder: bool = field(default=False, metadata={"help": "unfreeze the SONAR decoder (paper v2)"})
    merge_lora: bool = field(default=False, metadata={"help": "save a merged full model instead of the adapter"})


def load_documents(args: ScriptArguments):
    path = Path(args.dataset)
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
    elif path.is_file():
        loaded = load_data_file(path)
    else:
        loaded = datasets.load_dataset(args.dataset, args.dataset_config)
    if isinstance(loaded, datasets.DatasetDict):
        if args.train_split not in loaded:
            raise ValueError(f"No split {args.train_split!r} in {args.dataset}: it has {list(loaded)} (--train_split)")
        train = loaded[args.train_split]
        evaluation = loaded[args.eval_split] if args.eval_split else None
    else:
        train, evaluation = loaded, None
    if args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if evaluation is None and args.eval_fraction > 0:
        parts = train.train_test_split(test_size=args.eval_fraction, seed=0)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation


def main(argv=None) -> int:
    parser = HfArgumentParser((ScriptArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses(argv)
    if not args.model_name_or_path or not args.dataset:
        parser.error("--model_name_or_path and --dataset are required")
    if args.train_sonar_decoder and args.lora:
        parser.error("--train_sonar_decoder trains the whole SONAR decoder (full fine-tuning); with --lora use "
                     "--lora_sonar_decoder to put adapters on it")  # fmt: skip
    if args.merge_lora and not args.lora:
        parser.error("--merge_lora needs --lora")
    training_args = resolve_mixed_precision(training_args, args.precision)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    logger.info(f"mixed precision: {training_args.mixed_precision}")

    # fp32 master weights; autocast handles bf16/fp16. The frozen SONAR encoder embeds on the training device.
    model = AutoModel.from_pretrained(args.model_name_or_path, dtype=torch.float32)
    tokenizer = model.tokenizer
    if args.loss_type:
        model.config.loss_type = args.loss_type
    if args.train_sonar_decoder:
        unfreeze_sonar_decoder(model)
    if training_args.ddp_find_unused_parameters is None:
        # Every trainable parameter gets a gradient (SONAR is frozen), so DDP can skip its unused-parameter search;
        # only an unfrozen or adapted SONAR decoder with the MSE-only loss goes unused.
        decoder_trains = args.train_sonar_decoder or args.lora_sonar_decoder
        training_args = dataclasses.replace(
            training_args, ddp_find_unused_parameters=decoder_trains and model.config.loss_type == "mse"
        )
    model.sonar_encoder.to(training_args.device)

    train_docs, eval_docs = load_documents(args)
    # SONAR embeddings are computed once: the main process first, the others then read its `datasets` cache.
    # (A large corpus can take longer than the distributed timeout, --ddp_timeout: run --prepare_only first.)
    with training_args.main_process_first(desc="SONAR embeddings"):
        prepare = dict(text_column=args.text_column, lang_column=args.lang_column, default_lang=args.lang,
                       max_sentences=args.max_sentences, max_target_length=args.max_target_length,
                       batch_size=args.embedding_batch_size, skip_bad_rows=args.skip_bad_rows,
                       num_proc=args.preprocessing_num_workers)  # fmt: skip
        train_set = prepare_dataset(train_docs, model, **prepare)
        eval_set = prepare_dataset(eval_docs, model, **prepare) if eval_docs is not None else None
    logger.info(f"{len(train_set)} training documents" + (f", {len(eval_set)} for evaluation" if eval_set else ""))
    if args.prepare_only:
        return 0

    if args.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args.lora_r, args.lora_alpha, args.lora_dropout,
                                                  sonar_decoder=args.lora_sonar_decoder))  # fmt: skip
        model.print_trainable_parameters()

    # The prepared columns are `forward`'s argument names, so the default remove_unused_columns=True keeps exactly
    # them. The callback saves the tokenizer into every checkpoint: each is a complete, loadable model.
    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=SonarLLMDataCollator.for_model(model), callbacks=[save_tokenizer_callback(tokenizer)],
    )  # fmt: skip
    train_and_evaluate(trainer, training_args, evaluate=eval_set is not None)
    if args.merge_lora:  # (not under FSDP: merge a saved adapter afterwards instead)
        if trainer.is_world_process_zero():
            trainer.accelerator.unwrap_model(model).merge_and_unload().save_pretrained(training_args.output_dir)
    else:
        if trainer.is_fsdp_enabled:  # checkpoints stay sharded (fast resume); the final model is one loadable file
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        trainer.save_model()  # on all processes (FSDP gathers the shards): the model, or the adapter with --lora
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)
    return 0


def train_and_evaluate(trainer: Trainer, training_args: TrainingArguments, evaluate: bool) -> None:
    """Train (resuming from a checkpoint folder, or from the newest one with "last"), evaluate, and keep the loss
    history in trainer_state.json: the same steps for fine-tuning and pretraining."""
    resume = training_args.resume_from_checkpoint
    result = trainer.train(resume_from_checkpoint=True if resume in ("last", "true", "True") else resume)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    if evaluate:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    trainer.save_state()


if __name__ == "__main__":
    sys.exit(main())
