"""LoRA fine-tuning of SONAR-LLM in a few lines of Python (the CLI equivalent: `examples/finetune.py --lora`).

    python examples/finetune_lora.py --model path/or/repo --dataset docs.jsonl --output lora-out [--merge]

Adapters go on the backbone's attention and MLP projections (an explicit regex, never "all-linear", which would
also hit the frozen SONAR modules); the sentence projections are trained in full (`modules_to_save`); SONAR stays
frozen (add --lora-sonar-decoder to adapt the decoder too, as in the paper's v2 ablation). The adapter folder
reloads with `PeftModel.from_pretrained(AutoModel.from_pretrained(model), "lora-out")`; --merge also writes a
merged full model to `lora-out/merged`, which loads with `AutoModel.from_pretrained`.
"""

import argparse
import os

import datasets
from peft import PeftModel, get_peft_model
from transformers import AutoModel, Trainer, TrainingArguments

import sonar_llm_hf  # noqa: F401  (registers the Auto classes)
from sonar_llm_hf.training.data import SonarLLMDataCollator, prepare_dataset
from sonar_llm_hf.training.lora import lora_config


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True, help="a .jsonl file with a 'text' field per document")
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lora-sonar-decoder", action="store_true")
    parser.add_argument("--merge", action="store_true", help="also save a merged model to OUTPUT/merged")
    args = parser.parse_args(argv)

    # 1. documents -> sentences -> SONAR embeddings + target ids (cached by datasets)
    model = AutoModel.from_pretrained(args.model)
    documents = datasets.load_dataset("json", data_files=args.dataset)["train"]
    train_set = prepare_dataset(documents, model)

    # 2. LoRA on the backbone, the projections in full, SONAR frozen
    peft_model = get_peft_model(model, lora_config(r=args.rank, alpha=2 * args.rank,
                                                   sonar_decoder=args.lora_sonar_decoder))  # fmt: skip
    peft_model.print_trainable_parameters()

    # 3. train: the prepared columns are forward's arguments, so TrainingArguments need nothing special
    training_args = TrainingArguments(output_dir=args.output, max_steps=args.steps,
                                      per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
                                      logging_steps=10, save_steps=100, report_to=[])  # fmt: skip
    trainer = Trainer(model=peft_model, args=training_args, train_dataset=train_set,
                      data_collator=SonarLLMDataCollator())  # fmt: skip
    trainer.train()

    # 4. save the adapter (+ the trained projections) and the tokenizer; optionally a merged model
    peft_model.save_pretrained(args.output)
    model.tokenizer.save_pretrained(args.output)
    if args.merge:
        base = AutoModel.from_pretrained(args.model)
        merged = PeftModel.from_pretrained(base, args.output).merge_and_unload()
        merged.save_pretrained(os.path.join(args.output, "merged"))
        model.tokenizer.save_pretrained(os.path.join(args.output, "merged"))


if __name__ == "__main__":
    main()
