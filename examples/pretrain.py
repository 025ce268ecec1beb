"""Pretrain SONAR-LLM from scratch with the paper's recipe (arXiv 2508.05305, §3): a random Llama backbone on a
frozen SONAR, token cross-entropy through the SONAR decoder, on documents split offline into sentences.

    python examples/pretrain.py --preset 100M --sonar_name_or_path SONAR_FOLDER --dataset roneneldan/TinyStories \
        --eval_split validation --output_dir out/sonar-llm-100m --per_device_train_batch_size 8
    accelerate launch --config_file examples/accelerate/ddp.yaml examples/pretrain.py ...    # many GPUs (or fsdp.yaml)

The recipe (the defaults below; any TrainingArguments flag given on the command line wins):
- documents: each split offline (sentencex), its first 32 sentences + "End of sequence."; SONAR embeddings computed
  once and cached (`--embedding_cache`), the corpus sharded across the processes (each process embeds its part, in
  resumable shards of `--shard_size` documents; an interrupted run restarts at the first unfinished shard);
- AdamW (eps 1e-5, weight decay 0.01), learning rate 1e-3 (the paper's best for SONAR-LLM) with cosine decay after a
  5% linear warmup (the reference: 820 of 16,480 steps), gradient clipping 1.0, 4 epochs, seed 42;
- 512 documents per optimizer step (`--global_batch_size`; gradient accumulation is derived from the per-device
  batch and the number of processes), bf16 autocast where the GPU has it, else fp16 (`--precision`);
- the validation loss (token cross-entropy on `--eval_split` or `--eval_fraction`) evaluated and logged each epoch.

`--preset` is a released backbone size (`SONAR_LLM_PRESETS`: 100M/300M/600M/900M from the reference's JSONs; 1.3B
is inferred, UNCONFIRMED) or `tiny` (a few-second demo size). `--sonar_name_or_path` is a converted SONAR-LLM folder
whose frozen SONAR encoder, decoder and tokenizer are taken (its backbone is discarded): a converted release, or
the package's demo model for a miniature run on the story world:

    python examples/pretrain.py --preset tiny --sonar_name_or_path sonar_llm_hf/demo/demo_model \
        --dataset stories.jsonl --eval_fraction 0.1 --output_dir out/tiny --num_train_epochs 1 --global_batch_size 8

A corpus already embedded by `sonar-llm embed` (parquet shards in LCM's layout, made with the same SONAR encoder) is
read directly with `--embedded_corpus DIR` instead of `--dataset`: nothing is re-embedded. `--streaming` reads the
shards lazily (large sets; needs `--max_steps`):

    sonar-llm embed stories.jsonl --output corpus/ --model sonar_llm_hf/demo/demo_model
    python examples/pretrain.py --preset tiny --sonar_name_or_path sonar_llm_hf/demo/demo_model \
        --embedded_corpus corpus/ --eval_fraction 0.1 --output_dir out/tiny --global_batch_size 8
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import AutoModel, HfArgumentParser, Trainer, TrainingArguments

sys.path.insert(0, str(Path(__file__).parent))
from finetune import load_documents, train_and_evaluate  # noqa: E402  (the same dataset loading as fine-tuning)

from sonar_llm_hf import SONAR_LLM_PRESETS, SonarLLMConfig, SonarLLMForCausalSentenceModeling, llama_preset  # noqa: E402
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset  # noqa: E402
from sonar_llm_hf.training.embedded_corpus import load_embedded_corpus, prepare_embedded_dataset  # noqa: E402
from sonar_llm_hf.training.lora import resolve_mixed_precision, save_tokenizer_callback  # noqa: E402

logger = logging.getLogger("pretrain")

# TrainingArguments of the paper's recipe, used unless the command line sets them.
PAPER_RECIPE = {
    "learning_rate": "1e-3",
    "lr_scheduler_type": "cosine",
    "warmup_steps": "0.05",
    "adam_epsilon": "1e-5",
    "weight_decay": "0.01",
    "max_grad_norm": "1.0",
    "num_train_epochs": "4",
    "seed": "42",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "logging_steps": "10",
}
TINY_PRESET = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, head_dim=16)
UNCONFIRMED = {"1.3B": "the 1.3B backbone shape is inferred (hidden 2048, 16 layers, 32 heads), not published"}


@dataclass
class PretrainArguments:
    preset: str = field(default="100M", metadata={"help": f"{', '.join(SONAR_LLM_PRESETS)} or tiny"})
    sonar_name_or_path: str = field(default=None, metadata={"help": "SONAR-LLM folder whose frozen SONAR is used"})
    dataset: str = field(default=None, metadata={"help": "local file/folder or Hub dataset name"})
    dataset_config: str | None = field(default=None)
    train_split: str = field(default="train")
    eval_split: str | None = field(default=None, metadata={"help": "split for the validation loss"})
    eval_fraction: float = field(default=0.0, metadata={"help": "hold out this fraction instead of --eval_split"})
    text_column: str = field(default="text")
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)
    max_sentences: int = field(default=32, metadata={"help": "sentences kept per document (the paper: 32)"})
    loss_type: str = field(default="ce", metadata={"help": "ce (the paper), mse (the LCM baseline) or ce+mse"})
    add_begin: bool = field(default=False, metadata={"help": "prepend 'Begin of text.' to every document"})
    global_batch_size: int | None = field(
        default=512,
        metadata={"help": "documents per optimizer step (paper: 512); 0 keeps --gradient_accumulation_steps"},
    )
    precision: str = field(default="auto", metadata={"help": "auto (bf16/fp16 where the GPU has it), no, bf16, fp16"})
    embedding_cache: str | None = field(
        default=None, metadata={"help": "folder of the cached SONAR embeddings (default: <output_dir>/embeddings)"}
    )
    embedding_batch_size: int = field(default=64, metadata={"help": "sentences per SONAR encoder call"})
    shard_size: int = field(default=1000, metadata={"help": "documents per resumable embedding shard"})
    preprocessing_num_workers: int | None = field(default=None)
    prepare_only: bool = field(default=False, metadata={"help": "embed the corpus, then exit"})
    embedded_corpus: str | None = field(
        default=None, metadata={"help": "`sonar-llm embed` output folder, read instead of --dataset (no re-embedding)"}
    )
    eval_embedded_corpus: str | None = field(
        default=None, metadata={"help": "`sonar-llm embed` folder for the validation loss"}
    )
    streaming: bool = field(default=False, metadata={"help": "stream --embedded_corpus (needs --max_steps)"})


def with_recipe(argv: list[str]) -> list[str]:
    """The command line plus the recipe's TrainingArguments that it does not set."""
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    extra = [item for name, value in PAPER_RECIPE.items() if f"--{name}" not in given for item in (f"--{name}", value)]
    return list(argv) + extra


def build_model(args: PretrainArguments) -> SonarLLMForCausalSentenceModeling:
    """A randomly initialised backbone of the preset on the frozen SONAR (and tokenizer) of `sonar_name_or_path`."""
    key = args.preset if args.preset == "tiny" else args.preset.upper()
    if key != "tiny" and key not in SONAR_LLM_PRESETS:
        raise ValueError(f"Unknown --preset {args.preset!r}; choose {', '.join(SONAR_LLM_PRESETS)} or tiny.")
    if key in UNCONFIRMED:
        logger.warning(f"preset {key}: UNCONFIRMED: {UNCONFIRMED[key]}")
    sonar = AutoModel.from_pretrained(args.sonar_name_or_path, dtype=torch.float32)
    backbone = llama_preset("100M", **TINY_PRESET) if key == "tiny" else llama_preset(key)
    config = SonarLLMConfig(
        llama_config=backbone, encoder_config=sonar.sonar_encoder.config.to_dict(),
        decoder_config=sonar.sonar_decoder.config.to_dict(), embed_dim=sonar.config.embed_dim,
        eos_sentence=sonar.config.eos_sentence, begin_sentence=sonar.config.begin_sentence, add_begin=args.add_begin,
        default_lang=sonar.config.default_lang, loss_type=args.loss_type,
    )  # fmt: skip
    model = SonarLLMForCausalSentenceModeling(config)  # the seed is set by the caller (TrainingArguments.seed)
    model.sonar_encoder.load_state_dict(sonar.sonar_encoder.state_dict())
    model.sonar_decoder.load_state_dict(sonar.sonar_decoder.state_dict())
    model.tokenizer = sonar.tokenizer
    model.generation_config.max_length = sonar.generation_config.max_length
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(f"preset {key}: {trainable / 1e6:.2f}M trainable parameters (backbone + projections)")
    return model


def embed_corpus(documents, model, args: PretrainArguments, training_args: TrainingArguments, name: str):
    """SONAR examples for `documents`, the work split across processes: each embeds its contiguous part into cache
    files (resumable shards), then every process reads all parts from the cache."""
    from accelerate import PartialState

    state = PartialState()
    cache = Path(args.embedding_cache or os.path.join(training_args.output_dir, "embeddings"))
    options = dict(text_column=args.text_column, max_sentences=args.max_sentences, add_begin=args.add_begin,
                   batch_size=args.embedding_batch_size, shard_size=args.shard_size,
                   num_proc=args.preprocessing_num_workers, progress_bar=state.is_local_main_process)  # fmt: skip
    parts = state.num_processes
    part_name = lambda i: str(cache / f"{name}-part{i}of{parts}.arrow")  # noqa: E731
    prepare_dataset(documents.shard(parts, state.process_index, contiguous=True), model,
                    cache_file_name=part_name(state.process_index), **options)  # fmt: skip
    state.wait_for_everyone()
    prepared = [prepare_dataset(documents.shard(parts, i, contiguous=True), model, cache_file_name=part_name(i),
                                **{**options, "progress_bar": False}) for i in range(parts)]  # fmt: skip
    return prepared[0] if parts == 1 else datasets.concatenate_datasets(prepared)


def read_embedded(args: PretrainArguments, model, training_args: TrainingArguments):
    """Training (and validation) examples from `sonar-llm embed` shards, checked against the model's encoder."""
    options = dict(max_sentences=args.max_sentences, add_begin=args.add_begin)

    def examples(path):
        corpus = load_embedded_corpus(path, streaming=args.streaming)
        return prepare_embedded_dataset(corpus, model, corpus_path=path, **options)

    train = examples(args.embedded_corpus)
    if args.max_train_samples and args.streaming:
        train = train.take(args.max_train_samples)
    elif args.max_train_samples:
        train = train.select(range(min(args.max_train_samples, len(train))))
    evaluation = examples(args.eval_embedded_corpus) if args.eval_embedded_corpus else None
    if evaluation is None and args.eval_fraction > 0:
        if args.streaming:
            raise ValueError("--eval_fraction cannot split a streamed corpus: pass --eval_embedded_corpus.")
        parts = train.train_test_split(test_size=args.eval_fraction, seed=0)
        train, evaluation = parts["train"], parts["test"]
    return train, evaluation


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((PretrainArguments, TrainingArguments))
    args, training_args = parser.parse_args_into_dataclasses(with_recipe(sys.argv[1:] if argv is None else argv))
    if not args.sonar_name_or_path or not (args.dataset or args.embedded_corpus):
        parser.error("--sonar_name_or_path and --dataset (or --embedded_corpus) are required")
    if args.streaming and (not args.embedded_corpus or training_args.max_steps <= 0):
        parser.error("--streaming reads --embedded_corpus lazily and needs --max_steps (its length is unknown)")
    training_args = resolve_mixed_precision(training_args, args.precision)
    if args.global_batch_size:
        per_step = training_args.per_device_train_batch_size * training_args.world_size
        if args.global_batch_size % per_step:
            parser.error(f"--global_batch_size {args.global_batch_size} is not a multiple of per-device batch x "
                         f"processes = {per_step}")  # fmt: skip
        training_args = dataclasses.replace(
            training_args, gradient_accumulation_steps=args.global_batch_size // per_step
        )
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING)
    logger.info(
        f"mixed precision: {training_args.mixed_precision}; {training_args.gradient_accumulation_steps} "
        f"accumulation steps x {training_args.per_device_train_batch_size} x {training_args.world_size}"
    )

    torch.manual_seed(training_args.seed)
    model = build_model(args)
    model.sonar_encoder.to(training_args.device)
    if args.embedded_corpus:
        train_set, eval_set = read_embedded(args, model, training_args)
    else:
        train_docs, eval_docs = load_documents(args)
        if eval_docs is not None and args.max_eval_samples:
            eval_docs = eval_docs.select(range(min(args.max_eval_samples, len(eval_docs))))
        train_set = embed_corpus(train_docs, model, args, training_args, "train")
        eval_set = embed_corpus(eval_docs, model, args, training_args, "eval") if eval_docs is not None else None
    if not args.streaming:
        logger.info(f"{len(train_set)} training documents" + (f", {len(eval_set)} for validation" if eval_set else ""))
    if args.prepare_only:
        return 0
    if eval_set is None and training_args.eval_strategy != "no":
        logger.warning("No validation documents (--eval_split or --eval_fraction): the validation loss is not logged.")
        training_args = dataclasses.replace(training_args, eval_strategy="no")

    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=SonarLLMDataCollator.for_model(model), callbacks=[save_tokenizer_callback(model.tokenizer)],
    )  # fmt: skip
    train_and_evaluate(trainer, training_args, evaluate=eval_set is not None)  # validation loss in trainer_state.json
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model()
    if trainer.is_world_process_zero():
        model.tokenizer.save_pretrained(training_args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
