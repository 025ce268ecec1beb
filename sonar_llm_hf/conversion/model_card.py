"""Model cards for converted SONAR-LLM checkpoints (huggingface_hub `ModelCard`), with the paper's figures.

Not remote code: only the converter imports it. `RELEASED` is the catalogue of released originals (CHECKPOINTS.md
shows the same table); `PAPER_RESULTS` holds the figures arXiv 2508.05305 v2 reports for a released size.
"""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models.pipeline_sonar_llm import HUB_TASK

PAPER = "https://arxiv.org/abs/2508.05305"
REFERENCE_CODE = "https://github.com/FusionBrainLab/SONAR-LLM"
LLAMA3_VOCAB = 128_256  # the reference's untrained token embedding: part of its size labels, dropped at conversion

# Where the released originals live (FusionBrainLab/SONAR-LLM README @5239ab3 for the Drive files; the Hub repos
# are third-party-reported, see CHECKPOINTS.md). `hub` folders carry their own config.json; Drive files are training
# checkpoints that need `--preset` (or the reference JSON).
RELEASED = {
    "100M": {"drive": "https://drive.google.com/file/d/18KRywQXjRQFbbVZhkUp5uaWyCuD3pEga/view?usp=sharing",
             "hub": "raxtemur/sonar-llm-100m", "trained_on": "TinyStories"},
    "300M": {"drive": "https://drive.google.com/file/d/1A4Fqm-w1arBRiU_V67OrfBf_Ymrm71-7/view?usp=sharing",
             "hub": None, "trained_on": "TinyStories"},
    "600M": {"drive": "https://drive.google.com/file/d/1oG1_8whE1USC1lelF7-A9_Lhvfd2tNQm/view?usp=sharing",
             "hub": None, "trained_on": "TinyStories"},
    "900M": {"drive": "https://drive.google.com/file/d/1lzUkUNbFQkeYLp69FYrLA1vAB3--WbrY/view?usp=sharing",
             "hub": "raxtemur/sonar-llm-900m", "trained_on": "TinyStories"},
    "1.3B": {"drive": None, "hub": "raxtemur/sonar-llm-1.3b", "trained_on": "summarization corpora"},
}  # fmt: skip

# arXiv 2508.05305 v2 (three seeds). 900M: TinyStories NLG on the first generated sentence (512 validation stories)
# and GPT-4o judgments; 1.3B: summarization (512 examples). The other sizes appear only in the paper's figures.
# (task_type, dataset_type, dataset_name, metric_type, value, label)
GPT4O_900M = {"grammar": 7.1, "creativity": 5.2, "consistency": 6.0, "plot": 5.2}  # two-turn judge, 512 stories
PAPER_RESULTS = {
    "900M": [
        ("text-generation", "roneneldan/TinyStories", "TinyStories", "rougeL", 39.4, "ROUGE-L, short prefix"),
        ("text-generation", "roneneldan/TinyStories", "TinyStories", "meteor", 32.9, "METEOR, short prefix"),
        ("text-generation", "roneneldan/TinyStories", "TinyStories", "rougeL", 35.2, "ROUGE-L, long prefix"),
        *[("text-generation", "roneneldan/TinyStories", "TinyStories", f"gpt-4o-{aspect}", score,
           f"GPT-4o {aspect} (/10)") for aspect, score in GPT4O_900M.items()],
    ],
    "1.3B": [
        ("summarization", "EdinburghNLP/xsum", "XSum", "rougeL", 18.5, "ROUGE-L"),
        ("summarization", "EdinburghNLP/xsum", "XSum", "meteor", 14.5, "METEOR"),
        ("summarization", "abisee/cnn_dailymail", "CNN/DailyMail", "rougeL", 15.5, "ROUGE-L"),
        ("summarization", "abisee/cnn_dailymail", "CNN/DailyMail", "meteor", 10.0, "METEOR"),
    ],
}  # fmt: skip

TRAINING_DATA = {
    "TinyStories": (
        "TinyStories ([roneneldan/TinyStories](https://huggingface.co/datasets/roneneldan/TinyStories)), 4 epochs: "
        'each story split into sentences (nltk), its first 32 sentences plus "End of sequence.", embedded with '
        "SONAR."
    ),
    "summarization corpora": (
        "Pretrained on TinyTextbooks, TinyOrca-Textbooks, TinyStrangeTextbooks, TextbooksAreAllYouNeed, WikiText-103, "
        "XSum and CNN/DailyMail, per the paper."
    ),
    None: (
        "Not recorded in the checkpoint. The paper trained its 39M-900M models on TinyStories and its 1.3B models on "
        "summarization corpora; this backbone matches none of the released sizes."
    ),
}

BEGIN_NOTE = '; "Begin of text." is prepended to prompts, as the original config asks (`add_begin`)'

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

SONAR-LLM ([arXiv 2508.05305]({{ paper }})), {{ size_text }}: a decoder-only transformer that predicts the next
sentence as a {{ embed_dim }}-d SONAR embedding, trained with token-level cross-entropy through the frozen SONAR
decoder. This folder is a conversion of {{ source }} ({{ original }}) to a transformers model with
sonar-llm-hf (`conversion/convert_sonar_llm_to_hf.py`). It bundles the frozen SONAR text encoder and decoder, so
it is complete: text in, text out.

**Licence: CC-BY-NC-4.0 (non-commercial use only).** The bundled SONAR encoder and decoder weights are Meta's and
are released under CC-BY-NC-4.0, so this folder as a whole is CC-BY-NC-4.0. The SONAR-LLM reference code is
Apache-2.0; the sonar-llm-hf code is MIT.

## Usage

With the package installed (`pip install sonar-llm-hf`), no remote code runs:

```python
import sonar_llm_hf  # registers the model with AutoModel
from transformers import AutoModel

model = AutoModel.from_pretrained("{{ repo_id }}")
out = model.generate(["Once upon a time, there was a little girl. She loved to play outside."])
print(out.texts[0])
```

Without the package, the folder carries its own code (read it first; pin a `revision`). Besides transformers and
torch it needs `sentencex`, the sentence splitter training used (`pip install sentencex`; transformers names it if
it is missing):

```python
from transformers import AutoModel

model = AutoModel.from_pretrained("{{ repo_id }}", trust_remote_code=True)
print(model.generate(["Once upon a time, there was a little girl."]).texts[0])
```

As a pipeline (the folder's config.json lists it under `text-generation`, this card's `pipeline_tag`; with the
package installed, `pipeline("sentence-continuation", model=...)` works for any SONAR-LLM folder):

```python
from transformers import pipeline

pipe = pipeline(model="{{ repo_id }}", trust_remote_code=True)
pipe("Once upon a time, there was a little girl.", max_new_sentences=3)  # [{"generated_text": ...}]
```

`generate` reproduces the reference loop (SONAR beam search 5, stop when a decoded sentence re-encodes to within
cosine 0.98 of "End of sequence.", at most 32 sentences){{ begin_note }}. `model(embeddings).predicted_embeddings`
gives the raw next-sentence predictions.

The reference loop can say one sentence until its 32-sentence cap. Controls against that are off in this folder's
`generation_config.json` (so it reproduces the reference); opt in per call, on the command line, or save them:

```python
out = model.generate(
    ["Once upon a time, there was a little girl."],
    repetition_threshold=0.98,      # a sentence whose text, or re-encoded embedding (cosine >= 0.98), repeats ANY
    repetition_action="avoid",      #   earlier sentence of the continuation is re-decoded ("stop": end there)
    min_new_sentences=2,            # re-decode "End of sequence." before 2 new sentences
    avoid_special_sentences=True,   # never keep "Begin of text." / "End of sequence." as a story sentence
    latent_temperature=0.0,         # > 0: Gaussian noise on each predicted embedding (relative to its rms); seed=...
)
print(out.stop_reasons)  # "end", "max_sentences", "max_new_sentences", "repetition" or "special_sentence"
model.generation_config.repetition_threshold = 0.98  # ... then save_pretrained: the folder's new defaults
```

`sonar-llm generate "..." --model {{ repo_id }} --repetition-threshold 0.98 --repetition-action avoid
--min-new-sentences 2 --avoid-special-sentences` does the same. Re-decoding moves the prediction by fresh latent
noise (`avoid_temperature` 0.1 more per attempt, at most `avoid_attempts` 8); a repeat that cannot be avoided stops
the document, an end that cannot be avoided ends it. `latent_top_p` draws that noise from the Gaussian's
highest-density ball of mass p. Unlike LCM's `stop_on_repetition_cosine_threshold`, which compares a sentence with
the previous one only, every earlier generated sentence counts (the prompt's do not).

## Model

| | |
|---|---|
| backbone | {{ backbone }} |
| sentence encoder / decoder | {{ sonar }} |
| backbone config | {{ config_source }} |
| SONAR decoder | {{ decoder_note }} |
| begin sentence | {{ add_begin }} |
| parameters | backbone and projectors {{ trainable }}; with SONAR {{ total }} |
| dropped at conversion | {{ dropped }} |

Conversion checks: every source tensor mapped or deliberately dropped, shapes checked against the backbone config,
the checkpoint's own copy of the SONAR decoder compared with the one converted, and the converted model's predicted
embeddings equal, within 1e-5, those of an independent build of the reference (transformers' `LlamaForCausalLM`
from the reference's `llama_config` and two `nn.Linear` projectors, loaded from the checkpoint's own keys) on a few
documents; the written folder reloads to the same outputs.

## Training data

{{ training_data }}

## Results reported in the paper

{{ results }}

## Intended use and limitations

A research model for studying sentence-level language modelling. Intended for non-commercial research (the licence
requires it). It was trained on small English corpora; it is not instruction-tuned, has no safety tuning, and its
continuations can be incoherent, repetitive or factually wrong. SONAR covers 200 languages, but SONAR-LLM itself was
trained on English text only. Every sentence passes through a fixed-size embedding, so names, numbers and exact
wording may change on the way.

## Citation

```bibtex
@misc{dragunov2025sonarllm,
  title  = {SONAR-LLM: Autoregressive Transformer that Thinks in Sentence Embeddings and Speaks in Tokens},
  author = {Dragunov, Nikita and Rahmatullaev, Temurbek and Goncharova, Elizaveta and Kurdiukov, Nikita and
            Mirzoeva, Aysel and Borisiuk, Anna and Kuznetsov, Andrey and Razzhigaev, Anton},
  year   = {2025},
  eprint = {2508.05305},
  archivePrefix = {arXiv},
}
```
"""


def reference_parameter_count(llama) -> int:
    """Parameters of the reference's full Llama (its size label): layers, final norm and the tied 128k embedding."""
    h, f, hd = llama.hidden_size, llama.intermediate_size, llama.head_dim
    q, kv = llama.num_attention_heads * hd, llama.num_key_value_heads * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * f + 2 * h
    return llama.num_hidden_layers * per_layer + h + LLAMA3_VOCAB * h


def paper_size(llama, tolerance: float = 0.05) -> str | None:
    """The released size whose preset has (within `tolerance`) this backbone's reference parameter count, or None."""
    from ..models.configuration_sonar_llm import SONAR_LLM_PRESETS, llama_preset

    count = reference_parameter_count(llama)
    for name in SONAR_LLM_PRESETS:
        label = reference_parameter_count(llama_preset(name))
        if abs(count - label) <= tolerance * label:
            return name
    return None


def build_model_card(
    repo_id: str,
    size: str | None,
    config,
    source: str,
    dropped_parameters: int,
    trainable: int,
    total: int,
    decoder_note: str | None = None,
    add_begin_source: str | None = None,
    config_source: str | None = None,
) -> ModelCard:
    """The card of a converted folder. `size` is the preset the backbone matches exactly; when None, the size is
    inferred from the parameter count (and said so), and unknown sizes get no paper figures."""
    llama = config.llama_config
    inferred = size is None
    size = size or paper_size(llama)
    released = RELEASED.get(size or "", {})
    results = PAPER_RESULTS.get(size or "", [])
    eval_results = [
        EvalResult(
            task_type=task,
            dataset_type=dataset,
            dataset_name=name,
            metric_type=metric,
            metric_value=value,
            metric_name=label,
            source_name="SONAR-LLM paper (arXiv 2508.05305 v2)",
            source_url=PAPER,
        )  # fmt: skip
        for task, dataset, name, metric, value, label in results
    ]
    trained_on = released.get("trained_on")
    data = ModelCardData(
        license="cc-by-nc-4.0",
        library_name="transformers",
        pipeline_tag=HUB_TASK,  # the task saved folders list in `custom_pipelines`
        base_model="facebook/SONAR",
        language=["en"],
        tags=["sonar", "sonar-llm", "sentence-embeddings", "custom_code"],
        datasets=["roneneldan/TinyStories"] if trained_on == "TinyStories" else None,
        model_name=repo_id.split("/")[-1],
        eval_results=eval_results or None,
    )
    if size is None:
        size_text = f"a custom size ({reference_parameter_count(llama) / 1e6:,.1f}M parameters as the paper counts)"
    elif inferred:
        size_text = f"{size} (by parameter count; the backbone matches no preset exactly)"
    else:
        size_text = size
    where = [f"[Google Drive]({released['drive']})"] if released.get("drive") else []
    where += [f"[{released['hub']}](https://huggingface.co/{released['hub']})"] if released.get("hub") else []
    original = f"the released {size} originals: " + ", ".join(where) if where else "not a released original"
    if results:
        lines = "\n".join(f"- {name}, {label}: {value}" for _, _, name, _, value, label in results)
        lines += "\n\nFigures from the paper (v2), not re-measured on this conversion."
    else:
        lines = "The paper reports this size only in figures (scaling laws); see the paper."
    encoder, decoder = config.encoder_config, config.decoder_config
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        model_name=repo_id.split("/")[-1],
        paper=PAPER,
        size_text=size_text,
        source=source,
        original=original,
        repo_id=repo_id,
        embed_dim=config.embed_dim,
        backbone=f"Llama (RoPE llama3, RMSNorm), hidden {llama.hidden_size}, {llama.num_hidden_layers} layers, "
        f"{llama.num_attention_heads} heads of {llama.head_dim} ({llama.num_key_value_heads} key/value heads), "
        f"FFN {llama.intermediate_size}",
        sonar=f"SONAR text encoder and decoder (d {encoder.d_model}, {encoder.encoder_layers} + "
        f"{decoder.decoder_layers} layers, vocabulary {encoder.vocab_size:,}), frozen",
        add_begin=('yes ("Begin of text." is prepended to prompts)' if config.add_begin else "no")
        + (f" ({add_begin_source})" if add_begin_source else ""),
        decoder_note=decoder_note or "SONAR's",
        config_source=config_source or "not recorded",
        begin_note=BEGIN_NOTE if config.add_begin else "",
        trainable=f"{trainable:,}",
        total=f"{total:,}",
        dropped=f"{dropped_parameters:,} parameters of the reference's untrained {LLAMA3_VOCAB:,}-token Llama "
        "embedding / LM head",
        training_data=TRAINING_DATA[trained_on],
        results=lines,
    )
