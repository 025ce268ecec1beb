"""convert_sonar_to_hf: strict key mapping, row permutation, refusals, atomic output, full-size coverage on meta."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sonar_llm_hf import SonarTextDecoder, SonarTextDecoderConfig, SonarTextEncoder, SonarTextEncoderConfig
from sonar_llm_hf.conversion_sonar import (
    DECODER_KEY_MAPPING,
    ENCODER_KEY_MAPPING,
    build_decoder,
    build_encoder,
    convert_sonar,
    convert_state,
)
from sonar_llm_hf.conversion_utils import ConversionError, check_against_model

ROOT = Path(__file__).parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "reference"


def fs2_state(kind: str, vocab=50, dim=8, layers=2, ffn=16, device=None) -> dict:
    """A fairseq2-named SONAR state dict (random values, or meta tensors for full-size shape checks)."""
    make = (lambda *shape: torch.empty(*shape, device="meta")) if device == "meta" else torch.randn
    state = {f"{kind}_frontend.embed.weight": make(vocab, dim)}
    attentions = ["self_attn"] + (["encoder_decoder_attn"] if kind == "decoder" else [])
    for i in range(layers):
        p = f"{kind}.layers.{i}."
        for attn in attentions:
            for proj in ("q_proj", "k_proj", "v_proj", "output_proj"):
                state[f"{p}{attn}.{proj}.weight"], state[f"{p}{attn}.{proj}.bias"] = make(dim, dim), make(dim)
            state[f"{p}{attn}_layer_norm.weight"], state[f"{p}{attn}_layer_norm.bias"] = make(dim), make(dim)
        state[f"{p}ffn.inner_proj.weight"], state[f"{p}ffn.inner_proj.bias"] = make(ffn, dim), make(ffn)
        state[f"{p}ffn.output_proj.weight"], state[f"{p}ffn.output_proj.bias"] = make(dim, ffn), make(dim)
        state[f"{p}ffn_layer_norm.weight"], state[f"{p}ffn_layer_norm.bias"] = make(dim), make(dim)
    if kind == "encoder":
        state["layer_norm.weight"], state["layer_norm.bias"] = make(dim), make(dim)
    else:
        state["decoder.layer_norm.weight"], state["decoder.layer_norm.bias"] = make(dim), make(dim)
        state["final_proj.weight"] = state["decoder_frontend.embed.weight"]
    return state


def save(tmp_path, name, state) -> Path:
    path = tmp_path / f"{name}.pt"
    torch.save({"model": state}, path)
    return path


def test_special_rows_are_permuted_and_the_rest_kept():
    state = fs2_state("decoder")
    decoder = build_decoder(state, num_heads=2)
    fs2 = state["decoder_frontend.embed.weight"]
    hf = decoder.decoder.embed_tokens.weight
    assert torch.equal(hf[[0, 1, 2, 3]], fs2[[2, 0, 3, 1]])  # <s>, <pad>, </s>, <unk>
    assert torch.equal(hf[4:], fs2[4:])
    assert decoder.lm_head.weight is decoder.decoder.embed_tokens.weight
    encoder = build_encoder(fs2_state("encoder"), num_heads=2)
    assert encoder.config.encoder_layers == 2 and encoder.config.encoder_ffn_dim == 16


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_missing_extra_and_misshaped_keys_are_named(kind):
    build = build_encoder if kind == "encoder" else build_decoder
    state = fs2_state(kind)
    missing = dict(state)
    del missing[f"{kind}.layers.1.ffn.inner_proj.bias"]
    with pytest.raises(ConversionError, match=rf"missing 1: {kind}.layers.1.fc1.bias"):
        build(missing, num_heads=2)
    extra = {**state, f"{kind}.layers.0.mystery.weight": torch.zeros(1)}
    with pytest.raises(ConversionError, match=rf"{kind}.layers.0.mystery.weight"):
        build(extra, num_heads=2)
    wrong = {**state, f"{kind}.layers.0.self_attn.q_proj.weight": torch.zeros(8, 7)}
    with pytest.raises(ConversionError, match=r"mis-shaped: .*q_proj.weight \(8, 7\) != \(8, 8\)"):
        build(wrong, num_heads=2)
    with pytest.raises(ConversionError, match="does not divide"):
        build(state, num_heads=3)


def test_untied_decoder_head_is_refused():
    state = fs2_state("decoder")
    state["final_proj.weight"] = torch.randn_like(state["final_proj.weight"])
    with pytest.raises(ConversionError, match="ties them"):
        build_decoder(state, num_heads=2)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sonar_pwned_marker",))


def test_non_sonar_files_and_code_pickles_are_refused(tmp_path):
    with pytest.raises(ConversionError, match="not a SONAR fairseq2 checkpoint"):
        convert_sonar(tmp_path / "out", encoder_path=save_raw(tmp_path / "x.pt", {"weights": torch.zeros(2)}))
    llm = REFERENCE / "sonar_llm" / "checkpoint_step_7.pt"
    with pytest.raises(ConversionError, match="weights_only"):
        convert_sonar(tmp_path / "out", encoder_path=llm)  # a SONAR-LLM checkpoint (numpy RNG state inside)
    marker = Path("/tmp/sonar_pwned_marker")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": RunsCode()}))
    with pytest.raises(ConversionError, match="not executed"):
        convert_sonar(tmp_path / "out", decoder_path=evil)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def save_raw(path, obj):
    torch.save(obj, path)
    return path


def test_atomic_output_and_existing_folders(tmp_path):
    encoder = save(tmp_path, "enc", fs2_state("encoder"))
    broken = dict(fs2_state("decoder"))
    del broken["decoder.layer_norm.bias"]
    with pytest.raises(ConversionError):
        convert_sonar(tmp_path / "out", encoder, save(tmp_path, "dec", broken), num_heads=2)
    assert not (tmp_path / "out").exists()  # the decoder failed before anything was written
    other = tmp_path / "other"
    (other / "encoder").mkdir(parents=True)
    (other / "encoder" / "weights.bin").write_text("someone else's model")
    with pytest.raises(ConversionError, match="already holds other files"):
        convert_sonar(other, encoder, num_heads=2)
    assert (other / "encoder" / "weights.bin").read_text() == "someone else's model"
    convert_sonar(tmp_path / "out", encoder, num_heads=2)
    convert_sonar(tmp_path / "out", encoder, num_heads=2)  # same model again: replaced
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left behind


def test_cli_converts_and_casts(tmp_path):
    encoder, decoder = save(tmp_path, "enc", fs2_state("encoder")), save(tmp_path, "dec", fs2_state("decoder"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "conversion" / "convert_sonar_to_hf.py"), "--encoder", str(encoder), "--decoder",
         str(decoder), "--tokenizer", str(REFERENCE / "spm.model"), "--output", str(tmp_path / "out"),
         "--num-heads", "2", "--dtype", "bfloat16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "verified by reloading" in result.stdout
    loaded = SonarTextDecoder.from_pretrained(tmp_path / "out" / "decoder")
    assert loaded.dtype == torch.bfloat16 and loaded.tokenizer is not None
    bad = subprocess.run(
        [sys.executable, str(ROOT / "conversion" / "convert_sonar_to_hf.py"), "--output", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode == 2 and "Give --encoder, --decoder or both" in bad.stderr


def test_full_size_checkpoints_map_completely_on_meta():
    """Every key and shape of the real 24-layer, 256,206-token checkpoints maps onto our models."""
    for kind, cls, config, mapping, tensors, params in (
        ("encoder", SonarTextEncoder, SonarTextEncoderConfig(), ENCODER_KEY_MAPPING, 387, 766_091_264),
        ("decoder", SonarTextDecoder, SonarTextDecoderConfig(), DECODER_KEY_MAPPING, 24 * 26 + 4, 866_902_016),
    ):
        state = fs2_state(kind, vocab=256206, dim=1024, layers=24, ffn=8192, device="meta")
        assert len(state) == tensors
        converted = {k: v for k, v in convert_state_meta(state, mapping).items()}
        with torch.device("meta"):
            model = cls(config)
        check_against_model(converted, model, kind)
        assert sum(p.numel() for p in model.parameters()) == params


def convert_state_meta(state, mapping):
    """convert_state without the row permutation (meta tensors hold no values to permute)."""
    from sonar_llm_hf.conversion_utils import map_keys

    return map_keys(state, mapping, "full-size")


def test_convert_state_applies_the_permutation_only_to_token_tables():
    state = fs2_state("encoder")
    converted = convert_state(state, ENCODER_KEY_MAPPING, "encoder")
    assert torch.equal(converted["encoder.layers.0.fc1.weight"], state["encoder.layers.0.ffn.inner_proj.weight"])
    assert not torch.equal(converted["encoder.embed_tokens.weight"], state["encoder_frontend.embed.weight"])
