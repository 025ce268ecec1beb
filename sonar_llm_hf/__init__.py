"""sonar_llm_hf: SONAR-LLM and the SONAR text encoder/decoder as Hugging Face transformers models.

Importing the package registers the Auto classes, so `AutoConfig`/`AutoModel.from_pretrained(folder)` work without
`trust_remote_code`. Saved folders also carry the model code (`auto_map`) for users without the package.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

from .configuration_sonar_llm import SONAR_LLM_PRESETS, SonarLLMConfig, llama_preset
from .configuration_sonar_text import SonarTextDecoderConfig, SonarTextEncoderConfig
from .generation_sonar_llm import PrintSentenceStreamer, SentenceStreamer, SonarLLMGenerateOutput
from .modeling_sonar_llm import SonarLLMForCausalSentenceModeling, SonarLLMOutput
from .modeling_sonar_text import SonarTextDecoder, SonarTextEncoder
from .splitting_sonar_llm import split_sentences
from .tokenization_sonar import SONAR_LANGUAGES, build_sonar_tokenizer, check_language

AutoConfig.register(SonarTextEncoderConfig.model_type, SonarTextEncoderConfig, exist_ok=True)
AutoConfig.register(SonarTextDecoderConfig.model_type, SonarTextDecoderConfig, exist_ok=True)
AutoConfig.register(SonarLLMConfig.model_type, SonarLLMConfig, exist_ok=True)
AutoModel.register(SonarTextEncoderConfig, SonarTextEncoder, exist_ok=True)
AutoModel.register(SonarTextDecoderConfig, SonarTextDecoder, exist_ok=True)
AutoModelForSeq2SeqLM.register(SonarTextDecoderConfig, SonarTextDecoder, exist_ok=True)
AutoModel.register(SonarLLMConfig, SonarLLMForCausalSentenceModeling, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "SONAR_LANGUAGES",
    "SONAR_LLM_PRESETS",
    "PrintSentenceStreamer",
    "SentenceStreamer",
    "SonarLLMConfig",
    "SonarLLMForCausalSentenceModeling",
    "SonarLLMGenerateOutput",
    "SonarLLMOutput",
    "SonarTextDecoder",
    "SonarTextDecoderConfig",
    "SonarTextEncoder",
    "SonarTextEncoderConfig",
    "build_sonar_tokenizer",
    "check_language",
    "llama_preset",
    "split_sentences",
]
