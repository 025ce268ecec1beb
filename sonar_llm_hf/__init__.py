"""sonar_llm_hf: SONAR-LLM and the SONAR text encoder/decoder as Hugging Face transformers models.

Layout (the folders are the design):
- `models/`: exactly the Hub remote code (configurations, models, generation, runtime tokenization, sentence
  splitting);
- `conversion/`: fairseq2 / reference checkpoints -> transformers folders, the tokenizer builder, model cards;
- `training/`: the `datasets` pipeline, the collator, LoRA helpers;
- `evaluation/`: the paper's evaluation protocol;
- `demo/`: the story world and the packaged offline demo model;
- `speed/`: the optional CPU speed paths (oneDNN, packed weights, padding-free encoding, int8), one entry point;
- `testing/`: tiny real components and the reference restatement for tests and benchmarks.

Importing the package registers the Auto classes, so `AutoConfig`/`AutoModel.from_pretrained(folder)` work without
`trust_remote_code`. Saved folders also carry the model code (`auto_map`) for users without the package.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM
from transformers.pipelines import PIPELINE_REGISTRY

from .conversion.tokenizer import build_sonar_tokenizer
from .models.configuration_sonar_llm import SONAR_LLM_PRESETS, SonarLLMConfig, llama_preset
from .models.configuration_sonar_text import SonarTextDecoderConfig, SonarTextEncoderConfig
from .models.generation_sonar_llm import (
    PrintSentenceStreamer,
    SentenceStreamer,
    SonarLLMGenerateOutput,
    split_sentences,
)
from .models.modeling_sonar_llm import SonarLLMForCausalSentenceModeling, SonarLLMOutput
from .models.modeling_sonar_text import SonarTextDecoder, SonarTextEncoder
from .models.pipeline_sonar_llm import PACKAGE_TASK, SonarLLMSentencePipeline
from .models.tokenization_sonar import SONAR_LANGUAGES, check_language
from .speed import pack_sonar, prepare_for_inference, quantize_sonar, unpack_sonar
from .training.data import SonarLLMDataCollator, prepare_dataset, split_documents

AutoConfig.register(SonarTextEncoderConfig.model_type, SonarTextEncoderConfig, exist_ok=True)
AutoConfig.register(SonarTextDecoderConfig.model_type, SonarTextDecoderConfig, exist_ok=True)
AutoConfig.register(SonarLLMConfig.model_type, SonarLLMConfig, exist_ok=True)
AutoModel.register(SonarTextEncoderConfig, SonarTextEncoder, exist_ok=True)
AutoModel.register(SonarTextDecoderConfig, SonarTextDecoder, exist_ok=True)
AutoModelForSeq2SeqLM.register(SonarTextDecoderConfig, SonarTextDecoder, exist_ok=True)
AutoModel.register(SonarLLMConfig, SonarLLMForCausalSentenceModeling, exist_ok=True)
# `pipeline("sentence-continuation", model=folder)` for any SONAR-LLM folder, the packaged demo included; saved
# folders also list the pipeline in their config.json for users without the package (`pipeline_sonar_llm.py`).
if PACKAGE_TASK not in PIPELINE_REGISTRY.supported_tasks:
    PIPELINE_REGISTRY.register_pipeline(PACKAGE_TASK, pipeline_class=SonarLLMSentencePipeline, pt_model=AutoModel,
                                        type="text")  # fmt: skip

__version__ = "0.1.0"

__all__ = [
    "SONAR_LANGUAGES",
    "SONAR_LLM_PRESETS",
    "PrintSentenceStreamer",
    "SentenceStreamer",
    "SonarLLMConfig",
    "SonarLLMDataCollator",
    "SonarLLMForCausalSentenceModeling",
    "SonarLLMGenerateOutput",
    "SonarLLMOutput",
    "SonarLLMSentencePipeline",
    "SonarTextDecoder",
    "SonarTextDecoderConfig",
    "SonarTextEncoder",
    "SonarTextEncoderConfig",
    "build_sonar_tokenizer",
    "check_language",
    "llama_preset",
    "prepare_dataset",
    "prepare_for_inference",
    "quantize_sonar",
    "pack_sonar",
    "unpack_sonar",
    "split_documents",
    "split_sentences",
]
