"""From fairseq2 SONAR and reference SONAR-LLM checkpoints to transformers folders: key mapping, the tokenizer,
verification, atomic writing and model cards. The command-line scripts in the repository's `conversion/` folder are
thin wrappers over these modules; none of this travels to the Hub."""

from .checkpoints import ConversionError, load_checkpoint
from .sonar import convert_sonar
from .sonar_llm import convert_sonar_llm
from .tokenizer import build_sonar_tokenizer

__all__ = ["ConversionError", "build_sonar_tokenizer", "convert_sonar", "convert_sonar_llm", "load_checkpoint"]
