"""Training SONAR-LLM with `datasets` and `Trainer`: documents to examples, the collator, LoRA helpers."""
