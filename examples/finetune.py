"""Fine-tune SONAR-LLM on your documents with transformers' Trainer (optionally LoRA), on one or many devices.

    python examples/finetune.py --model_name_or_path path/or/repo --dataset docs.jsonl --text_column text \
        --output_dir out --per_device_train_batch_size 8 --gradient_accumulation_steps 4 --num_train_epochs 1
    accelerate launch --config_file examples/accelerate/ddp.yaml examples/finetune.py ...   # many GPUs

--dataset is a local .jsonl/.json/.csv/.txt/.parquet file, a folder saved with `save_to_disk`, or a Hub dataset
name (with --dataset_config). Every TrainingArguments option is accepted (--learning_rate, --bf16, --eval_strategy,
--save_steps, --resume_from_checkpoint, --activation_checkpointing, --report_to ...). The result loads with
`AutoModel.from_pretrained(output_dir)` (LoRA: `PeftModel.from_pretrained(base, output_dir)`, or --merge_lora).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import AutoModel, HfArgumentParser, Trainer, TrainingArguments

import sonar_llm_hf  # noqa: F401  (registers the Auto classes)
from sonar_llm_hf.data import SonarLLMDataCollator, prepare_dataset
from sonar_llm_hf.training import lora_config, unfreeze_sonar_decoder


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
    max_train_samples: int | None = field(default=None)
    embedding_batch_size: int = field(default=64, metadata={"help": "sentences per SONAR encoder call"})
    loss_type: str | None = field(default=None, metadata={"help": "ce, mse or ce+mse (default: the model's)"})
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
        builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text", ".parquet": "parquet"}.get(path.suffix)
        if builder is None:
            raise ValueError(f"Unsupported dataset file {path}: use .jsonl, .json, .csv, .txt or .parquet.")
        loaded = datasets.load_dataset(builder, data_files=str(path))
    else:
        loaded = datasets.load_dataset(args.dataset, args.dataset_config)
    if isinstance(loaded, datasets.DatasetDict):
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
    model = AutoModel.from_pretrained(args.model_name_or_path, dtype=torch.float32)
    if args.loss_type:
        model.config.loss_type = args.loss_type
    if args.train_sonar_decoder:
        unfreeze_sonar_decoder(model)

    train_docs, eval_docs = load_documents(args)
    # SONAR embeddings are computed once (main process first, so others reuse the datasets cache)
    with training_args.main_process_first(desc="SONAR embeddings"):
        prepare = dict(text_column=args.text_column, lang_column=args.lang_column, default_lang=args.lang,
                       max_sentences=args.max_sentences, batch_size=args.embedding_batch_size)  # fmt: skip
        train_set = prepare_dataset(train_docs, model, **prepare)
        eval_set = prepare_dataset(eval_docs, model, **prepare) if eval_docs is not None else None

    if args.lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(args.lora_r, args.lora_alpha, args.lora_dropout,
                                                  sonar_decoder=args.lora_sonar_decoder))  # fmt: skip
        model.print_trainable_parameters()

    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=SonarLLMDataCollator(),
    )  # fmt: skip
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.log_metrics("train", result.metrics)
    if eval_set is not None:
        trainer.log_metrics("eval", trainer.evaluate())
    trainer.save_state()  # trainer_state.json: the loss history
    if trainer.is_world_process_zero():
        final = model.merge_and_unload() if args.lora and args.merge_lora else model
        final.save_pretrained(training_args.output_dir)
        (final.tokenizer if not args.lora or args.merge_lora else model.base_model.model.tokenizer).save_pretrained(
            training_args.output_dir
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
