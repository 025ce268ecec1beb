"""Model cards for converted SONAR-LLM checkpoints (huggingface_hub `ModelCard`), with the paper's figures."""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

PAPER = "https://arxiv.org/abs/2508.05305"

# arXiv 2508.05305 v2: TinyStories NLG on the first generated sentence (short prefix) for 900M; summarization for
# 1.3B (ROUGE-L / METEOR). Other sizes were evaluated only in figures.
PAPER_RESULTS = {
    "900M": [
        ("text-generation", "roneneldan/TinyStories", "TinyStories", "rougeL", 39.4, "ROUGE-L, short prefix (v2)"),
        ("text-generation", "roneneldan/TinyStories", "TinyStories", "meteor", 32.9, "METEOR, short prefix (v2)"),
    ],
    "1.3B": [
        ("summarization", "EdinburghNLP/xsum", "XSum", "rougeL", 18.5, "ROUGE-L (v2)"),
        ("summarization", "EdinburghNLP/xsum", "XSum", "meteor", 14.5, "METEOR (v2)"),
        ("summarization", "abisee/cnn_dailymail", "CNN/DailyMail", "rougeL", 15.5, "ROUGE-L (v2)"),
        ("summarization", "abisee/cnn_dailymail", "CNN/DailyMail", "meteor", 10.0, "METEOR (v2)"),
    ],
}

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

SONAR-LLM ([arXiv 2508.05305]({{ paper }})) {{ size }}: a decoder-only transformer that predicts the next sentence as a
1024-d SONAR embedding, trained with token-level cross-entropy through the frozen SONAR decoder. Converted from
{{ source }} with sonar-llm-hf (`conversion/convert_sonar_llm_to_hf.py`); the folder bundles
the frozen SONAR text encoder and decoder, so it is complete.

**Licence: CC-BY-NC-4.0 (non-commercial).** The bundled SONAR encoder and decoder weights are Meta's, released under
CC-BY-NC-4.0; this folder inherits that licence. The SONAR-LLM code is Apache-2.0 and this package's code MIT.

## Usage

With the package installed (`pip install sonar-llm-hf`):

```python
import sonar_llm_hf
from transformers import AutoModel

model = AutoModel.from_pretrained("{{ repo_id }}")
out = model.generate(["Once upon a time, there was a little girl. She loved to play outside."])
print(out.texts[0])
```

Without it, the folder carries its code:

```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{{ repo_id }}", trust_remote_code=True)
```

## Model

| | |
|---|---|
| backbone | Llama, hidden {{ hidden }}, {{ layers }} layers, {{ heads }} heads of {{ head_dim }}, FFN {{ ffn }} |
| sentence encoder/decoder | SONAR text encoder and decoder (d 1024, 24 layers each, frozen) |
| begin sentence | {{ add_begin }} |
| parameters | backbone and projectors {{ trainable }}; with SONAR {{ total }} |
| dropped at conversion | {{ dropped }} parameters of an untrained 128k-token Llama embedding/head |

## Training data

{{ training_data }}

## Results reported in the paper

{{ results }}

## Intended use and limitations

A research model for studying sentence-level language modelling. It was trained on small English corpora; it is not
instruction-tuned, has no safety tuning, and its continuations can be incoherent or factually wrong. Generation stops
when a decoded sentence re-encodes close to "End of sequence." (cosine 0.98) or after 32 sentences. SONAR supports
200 languages, but SONAR-LLM itself was trained on English text only.
"""


def build_model_card(
    repo_id: str,
    size: str | None,
    config,
    source: str,
    dropped_parameters: int,
    trainable: int,
    total: int,
) -> ModelCard:
    results = PAPER_RESULTS.get(size or "", [])
    eval_results = [
        EvalResult(task_type=task, dataset_type=dataset, dataset_name=name, metric_type=metric, metric_value=value,
                   metric_name=label, source_name="SONAR-LLM paper", source_url=PAPER)  # fmt: skip
        for task, dataset, name, metric, value, label in results
    ]
    data = ModelCardData(
        license="cc-by-nc-4.0",
        library_name="transformers",
        pipeline_tag="text-generation",
        base_model="facebook/SONAR",
        language=["en"],
        tags=["sonar", "sonar-llm", "sentence-embeddings", "custom_code"],
        datasets=["roneneldan/TinyStories"] if size != "1.3B" else None,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    llama = config.llama_config
    if results:
        lines = "\n".join(f"- {name}: {label} {value}" for _, _, name, _, value, label in results)
    else:
        lines = "The paper reports this size only in figures (scaling laws, GPT-4o judgments); see the paper."
    training_data = (
        "Pretrained on summarization-oriented corpora (TinyTextbooks, TinyOrca-Textbooks, TinyStrangeTextbooks, "
        "TextbooksAreAllYouNeed, WikiText-103, XSum, CNN/DailyMail), per the paper."
        if size == "1.3B"
        else "TinyStories (roneneldan/TinyStories): stories split into sentences, first 32 sentences plus "
        '"End of sequence.", embedded with SONAR.'
    )
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        model_name=repo_id.split("/")[-1],
        paper=PAPER,
        size=size or "(custom size)",
        source=source,
        repo_id=repo_id,
        hidden=llama.hidden_size,
        layers=llama.num_hidden_layers,
        heads=llama.num_attention_heads,
        head_dim=llama.head_dim,
        ffn=llama.intermediate_size,
        add_begin='yes ("Begin of text." is prepended to prompts)' if config.add_begin else "no",
        trainable=f"{trainable:,}",
        total=f"{total:,}",
        dropped=f"{dropped_parameters:,}",
        training_data=training_data,
        results=lines,
    )
