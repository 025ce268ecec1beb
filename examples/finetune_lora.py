"""LoRA fine-tuning of SONAR-LLM in a few lines of Python (the CLI equivalent: `examples/finetune.py --lora`).

    python examples/finetune_lora.py --model path/or/repo --dataset docs.jsonl --output lora-out

Adapters go on the backbone's attention and MLP projections; the sentence projections are trained in full; SONAR
stays frozen (add --lora-sonar-decoder to adapt the decoder too, as in the paper's v2 ablation). The adapter
folder reloads with `PeftModel.from_pretrained(AutoModel.from_pretrained(model), "lora-out")`.
"""

import argparse

import datasets
from peft import get_peft_model
from transformers import AutoModel, Trainer, TrainingArguments

import sonar_llm_hf  # noqa: F401
from sonar_llm_hf.data import SonarLLMDataCollator, prepare_dataset
from sonar_llm_hf.training import lora_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True, help="a .jsonl file with a 'text' field per document")
    parser.add_argument("--output", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lora-sonar-decoder", action="store_true")
    args = parser.parse_args()

    model = AutoModel.from_pretrained(args.model)
    documents = datasets.load_dataset("json", data_files=args.dataset)["train"]
    train_set = prepare_dataset(documents, model)  # sentences -> SONAR embeddings + target ids, cached
    model = get_peft_model(model, lora_config(r=16, alpha=32, sonar_decoder=args.lora_sonar_decoder))
    model.print_trainable_parameters()
    training_args = TrainingArguments(output_dir=args.output, max_steps=args.steps, per_device_train_batch_size=8,
                                      learning_rate=2e-4, logging_steps=10, save_steps=100, report_to=[])  # fmt: skip
    Trainer(model=model, args=training_args, train_dataset=train_set, data_collator=SonarLLMDataCollator()).train()
    model.save_pretrained(args.output)  # the adapter and the trained projections only


if __name__ == "__main__":
    main()
