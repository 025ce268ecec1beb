"""Shared tiny, real components: a SentencePiece tokenizer trained here and random-weight SONAR / SONAR-LLM models."""

import copy

import pytest
import torch

from sonar_llm_hf import (
    SonarLLMConfig,
    SonarLLMForCausalSentenceModeling,
    SonarTextDecoder,
    SonarTextDecoderConfig,
    SonarTextEncoder,
    SonarTextEncoderConfig,
    llama_preset,
)
from sonar_llm_hf.testing.tiny import build_tiny_tokenizer

SONAR_DIM = 16


def tiny_text_kwargs(tokenizer) -> dict:
    # The real model has two rows more than the HF tokenizer (fairseq2's <MMT_BT_DATA>, <SMT_BT_DATA>).
    return dict(
        d_model=SONAR_DIM,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        vocab_size=len(tokenizer) + 2,
    )


def tiny_llm_config(tokenizer, **overrides) -> SonarLLMConfig:
    text = tiny_text_kwargs(tokenizer)
    return SonarLLMConfig(
        llama_config=llama_preset(
            "100M", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, head_dim=8
        ),
        encoder_config=SonarTextEncoderConfig(**text),
        decoder_config=SonarTextDecoderConfig(**text),
        embed_dim=SONAR_DIM,
        **overrides,
    )


@pytest.fixture(scope="session")
def sonar_tokenizer(tmp_path_factory):
    return build_tiny_tokenizer(tmp_path_factory.mktemp("sonar_tokenizer"))


@pytest.fixture(scope="session")
def _tiny_sonar_llm(sonar_tokenizer):
    torch.manual_seed(0)
    model = SonarLLMForCausalSentenceModeling(tiny_llm_config(sonar_tokenizer)).eval()
    model.tokenizer = sonar_tokenizer
    return model


@pytest.fixture
def sonar_llm(_tiny_sonar_llm):
    """A fresh copy per test, so tests may train or modify it."""
    model = copy.deepcopy(_tiny_sonar_llm)
    model.tokenizer = _tiny_sonar_llm.tokenizer
    return model


@pytest.fixture(scope="session")
def tiny_sonar_llm_dir(_tiny_sonar_llm, sonar_tokenizer, tmp_path_factory):
    """A saved model folder (weights, config, remote code, tokenizer), as users get from the Hub."""
    path = tmp_path_factory.mktemp("sonar_llm_folder")
    _tiny_sonar_llm.save_pretrained(path)
    sonar_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_sonar_encoder(sonar_tokenizer):
    torch.manual_seed(1)
    model = SonarTextEncoder(SonarTextEncoderConfig(**tiny_text_kwargs(sonar_tokenizer))).eval()
    model.tokenizer = sonar_tokenizer
    return model


@pytest.fixture(scope="session")
def tiny_sonar_decoder(sonar_tokenizer):
    torch.manual_seed(2)
    model = SonarTextDecoder(SonarTextDecoderConfig(**tiny_text_kwargs(sonar_tokenizer))).eval()
    model.tokenizer = sonar_tokenizer
    return model
