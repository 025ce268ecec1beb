"""convert_sonar_to_hf: strict key mapping, row permutation, refusals, atomic output, full-size coverage on meta.

Synthetic fairseq2-layout state dicts (exact fs2 key names, tiny sizes) are written to real files in tmp_path.
Numerical parity with fairseq2 itself is in test_parity_sonar.py (golden fixtures).
"""

import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from sonar_llm_hf import SonarTextDecoder, SonarTextDecoderConfig, SonarTextEncoder, SonarTextEncoderConfig
from sonar_llm_hf.conversion import sonar as conversion_sonar
from sonar_llm_hf.conversion.checkpoints import (
    HF_TO_FS2_SPECIAL_ROWS,
    ConversionError,
    check_against_model,
    map_keys,
    original_key,
    permute_special_rows,
)
from sonar_llm_hf.conversion.sonar import (
    DECODER_KEY_MAPPING,
    ENCODER_KEY_MAPPING,
    build_decoder,
    build_encoder,
    convert_sonar,
    prepare_decoder,
    prepare_encoder,
)
from sonar_llm_hf.testing.tiny import make_fs2_sonar_state_dict

ROOT = Path(__file__).parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
MAPPINGS = {"encoder": ENCODER_KEY_MAPPING, "decoder": DECODER_KEY_MAPPING}
BUILD = {"encoder": build_encoder, "decoder": build_decoder}
# (token, fairseq2 id, HF NLLB id)
SPECIALS = [("<pad>", 0, 1), ("<unk>", 1, 3), ("<s>", 2, 0), ("</s>", 3, 2)]


def fs2_state(kind: str, vocab=50, dim=8, layers=2, ffn=16, device=None, dtype=torch.float32) -> dict:
    """A fairseq2-named SONAR state dict (random values, or meta tensors for full-size shape checks)."""
    return make_fs2_sonar_state_dict(kind, vocab, dim, layers, ffn, device=device, dtype=dtype)


def save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# ---------------------------------------------------------------------------------------------------- key names


@pytest.mark.skipif(not (REFERENCE / "a" / "encoder.pt").exists(), reason="golden fixtures not present")
@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_synthetic_state_dicts_use_fairseq2s_exact_key_names(kind):
    """The fixtures were saved by fairseq2's own SONAR factories (2 layers, d 32, FFN 64)."""
    real = torch.load(REFERENCE / "a" / f"{kind}.pt", weights_only=True)["model"]
    ours = fs2_state(kind, vocab=406, dim=32, layers=2, ffn=64)
    assert {k: tuple(v.shape) for k, v in real.items()} == {k: tuple(v.shape) for k, v in ours.items()}


# ---------------------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_every_tensor_converts_and_round_trips_with_the_permutation_undone(kind):
    state = fs2_state(kind)
    model = BUILD[kind](state, num_heads=2)
    converted = model.state_dict()
    sources = {}
    map_keys(state, MAPPINGS[kind], kind, sources=sources)
    assert sorted(sources.values()) == sorted(state)  # every fs2 key mapped, one to one
    permuted = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    for hf_key, fs2_key in sources.items():
        tensor = converted[hf_key]
        if hf_key in permuted:
            assert not torch.equal(tensor, state[fs2_key])
            tensor = permute_special_rows(tensor, HF_TO_FS2_SPECIAL_ROWS)
        assert torch.equal(tensor, state[fs2_key]), fs2_key
    assert set(converted) == set(sources)  # nothing else in the model


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_special_token_rows_move_to_hf_ids(kind):
    state = fs2_state(kind)
    model = BUILD[kind](state, num_heads=2)
    fs2 = state[f"{kind}_frontend.embed.weight"]
    table = model.get_input_embeddings().weight
    assert torch.equal(table[[0, 1, 2, 3]], fs2[[2, 0, 3, 1]])  # hf[[0,1,2,3]] = fs2[[2,0,3,1]]
    assert torch.equal(table[4:], fs2[4:])  # every other row keeps its index
    for token, fs2_id, hf_id in SPECIALS:
        assert torch.equal(table[hf_id], fs2[fs2_id]), token
    if kind == "decoder":
        assert model.lm_head.weight is model.decoder.embed_tokens.weight  # still tied after loading
        hidden = torch.randn(3, 8)
        hf_logits, fs2_logits = model.lm_head(hidden), hidden @ state["final_proj.weight"].T
        for token, fs2_id, hf_id in SPECIALS:  # the same token gets the same score under either numbering
            torch.testing.assert_close(hf_logits[:, hf_id], fs2_logits[:, fs2_id], rtol=0, atol=0, msg=token)
        torch.testing.assert_close(hf_logits[:, 4:], fs2_logits[:, 4:], rtol=0, atol=0)


def test_config_is_inferred_from_shapes():
    encoder = build_encoder(fs2_state("encoder", vocab=60, dim=12, layers=3, ffn=20), num_heads=3)
    assert (encoder.config.vocab_size, encoder.config.d_model, encoder.config.encoder_layers) == (60, 12, 3)
    assert (encoder.config.encoder_ffn_dim, encoder.config.encoder_attention_heads) == (20, 3)
    decoder = build_decoder(fs2_state("decoder", vocab=70, dim=12, layers=1, ffn=24), num_heads=4)
    assert (decoder.config.vocab_size, decoder.config.decoder_layers, decoder.config.decoder_ffn_dim) == (70, 1, 24)
    assert decoder.config.decoder_attention_heads == 4
    for kind in ("encoder", "decoder"):
        with pytest.raises(ConversionError, match="--num-heads 3 does not divide the model width 8"):
            BUILD[kind](fs2_state(kind), num_heads=3)


# ---------------------------------------------------------------------------------------------------- refusals


def _all_keys(kind):
    return [(kind, key) for key in fs2_state(kind)]


@pytest.mark.parametrize("kind,key", _all_keys("encoder") + _all_keys("decoder"))
def test_every_missing_key_is_refused_by_name(kind, key):
    state = fs2_state(kind)
    del state[key]
    with pytest.raises(ConversionError) as error:
        BUILD[kind](state, num_heads=2)
    assert key in str(error.value), str(error.value)  # the name the user's file uses


def _grow(tensor):
    """The same tensor one column (or element) wider."""
    return torch.zeros(*tensor.shape[:-1], tensor.shape[-1] + 1)


@pytest.mark.parametrize("kind,key", _all_keys("encoder") + _all_keys("decoder"))
def test_every_misshaped_key_is_refused_by_name(kind, key):
    state = fs2_state(kind)
    state[key] = _grow(state[key])
    if key == "decoder_frontend.embed.weight":
        state["final_proj.weight"] = state[key]  # keep the pair tied, so only the shape is wrong
    with pytest.raises(ConversionError) as error:
        BUILD[kind](state, num_heads=2)
    assert key in str(error.value), str(error.value)  # the name the user's file uses


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_unexpected_keys_are_refused_by_name(kind):
    for extra in (f"{kind}.layers.0.mystery.weight", "encoder_decoder_attn.q_proj.weight", "step", "pos_encoder.pe"):
        state = {**fs2_state(kind), extra: torch.zeros(1)}
        with pytest.raises(ConversionError, match=re.escape(extra)):
            BUILD[kind](state, num_heads=2)
    state = fs2_state(kind)
    state[f"{kind}.layers.5.ffn_layer_norm.bias"] = torch.zeros(8)  # a layer beyond the others
    with pytest.raises(ConversionError, match=r"not contiguous: \[0, 1, 5\]"):
        BUILD[kind](state, num_heads=2)


def test_untied_or_differently_sized_decoder_head_is_refused():
    state = fs2_state("decoder")
    state["final_proj.weight"] = torch.randn_like(state["final_proj.weight"])
    with pytest.raises(ConversionError, match="SONAR ties them"):
        build_decoder(state, num_heads=2)
    state["final_proj.weight"] = torch.randn(51, 8)
    with pytest.raises(ConversionError, match=r"50 rows but `final_proj.weight` 51"):
        build_decoder(state, num_heads=2)


class RunsCode:
    """Unpickling this would run a shell command that creates a marker file."""

    marker = Path("/tmp/sonar_convert_pwned_marker")

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_non_sonar_files_are_refused_clearly(tmp_path):
    out = tmp_path / "out"
    encoder_state = fs2_state("encoder")
    cases = [
        (save(tmp_path / "dict.pt", {"weights": torch.zeros(2)}), "encoder", "not a SONAR fairseq2 checkpoint"),
        (save(tmp_path / "tensor.pt", torch.zeros(3)), "encoder", "not a SONAR fairseq2 checkpoint"),
        (save(tmp_path / "llm.pt", {"model_state_dict": {"forward_proj.linear.weight": torch.zeros(2, 2)}}),
         "encoder", "SONAR-LLM training checkpoint"),
        (save(tmp_path / "llm_model.pt", {"model": {"forward_proj.linear.weight": torch.zeros(2, 2)}}),
         "encoder", "lacks `encoder_frontend.embed.weight`"),
        (save(tmp_path / "dec.pt", {"model": fs2_state("decoder")}), "encoder", "a SONAR decoder\\?"),
        (save(tmp_path / "enc.pt", {"model": encoder_state}), "decoder", "a SONAR encoder\\?"),
        (save(tmp_path / "empty_model.pt", {"model": {}}), "encoder", "state dict is empty"),
        (save(tmp_path / "lists.pt", {"model": {"encoder_frontend.embed.weight": [[1.0]]}}), "encoder",
         "not named tensors: 'encoder_frontend.embed.weight' \\(list\\)"),
        (save(tmp_path / "vector.pt", {"model": {**encoder_state, "encoder_frontend.embed.weight": torch.zeros(5)}}),
         "encoder", "`encoder_frontend.embed.weight` has shape \\(5,\\); expected 2 dimensions"),
        (tmp_path / "absent.pt", "encoder", "No checkpoint file"),
    ]  # fmt: skip
    (tmp_path / "text.pt").write_text("not a checkpoint at all")
    (tmp_path / "empty.pt").write_bytes(b"")
    cases += [(tmp_path / name, "decoder", "Could not read") for name in ("text.pt", "empty.pt")]
    for path, kind, message in cases:
        with pytest.raises(ConversionError, match=message):
            convert_sonar(out, **{f"{kind}_path": path}, num_heads=2)
    llm = REFERENCE / "sonar_llm" / "checkpoint_step_7.pt"
    if llm.exists():  # a real SONAR-LLM training checkpoint: numpy RNG state inside, refused unread
        with pytest.raises(ConversionError, match="weights_only"):
            convert_sonar(out, encoder_path=llm)
    with pytest.raises(ConversionError, match="Give --encoder, --decoder or both"):
        convert_sonar(out)
    with pytest.raises(ConversionError, match="Unknown dtype 'float64'"):
        convert_sonar(out, encoder_path=tmp_path / "enc.pt", dtype="float64")
    with pytest.raises(ConversionError, match="No tokenizer file"):
        convert_sonar(out, encoder_path=tmp_path / "enc.pt", tokenizer_path=tmp_path / "absent.model")
    with pytest.raises(ConversionError, match="as a SentencePiece model"):
        convert_sonar(out, encoder_path=tmp_path / "enc.pt", tokenizer_path=tmp_path / "text.pt", num_heads=2)
    assert not out.exists()


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_code_carrying_pickles_are_refused_and_not_run(tmp_path, how):
    RunsCode.marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    payload = {"model": {"encoder_frontend.embed.weight": RunsCode()}}
    if how == "pickle":
        evil.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, evil)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the plain pickle's protocol before refusing it
        with pytest.raises(ConversionError, match="not executed") as error:
            convert_sonar(tmp_path / "out", encoder_path=evil)
    if how == "torch.save":  # torch names the blocked callable
        assert "posix.system" in str(error.value) or "os.system" in str(error.value), str(error.value)
    assert not RunsCode.marker.exists()
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------- output


def test_dtype_default_keeps_the_checkpoints_and_option_casts(tmp_path):
    state = fs2_state("encoder", dtype=torch.bfloat16)
    written = convert_sonar(tmp_path / "bf16", encoder_path=save(tmp_path / "enc.pt", {"model": state}), num_heads=2)
    assert SonarTextEncoder.from_pretrained(written["encoder"]).dtype == torch.bfloat16
    written = convert_sonar(tmp_path / "fp16", encoder_path=tmp_path / "enc.pt", num_heads=2, dtype="float16")
    with safe_open(written["encoder"] / "model.safetensors", framework="pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}


def test_atomic_output_leaves_nothing_on_failure(tmp_path, monkeypatch):
    encoder = save(tmp_path / "enc.pt", {"model": fs2_state("encoder")})
    decoder = save(tmp_path / "dec.pt", {"model": fs2_state("decoder")})
    broken = fs2_state("decoder")
    del broken["decoder.layer_norm.bias"]
    with pytest.raises(ConversionError, match="decoder.layer_norm.bias"):
        convert_sonar(tmp_path / "out", encoder, save(tmp_path / "broken.pt", {"model": broken}), num_heads=2)
    assert not (tmp_path / "out").exists()

    # A failure after the encoder folder was written and verified (here: the decoder's reload check) must not
    # leave the encoder behind either, nor the output's parent folders, nor staging folders.
    real_verify = conversion_sonar._verify_reload

    def verify_then_fail(model, tokenizer, folder, auto_model):
        real_verify(model, tokenizer, folder, auto_model)
        if isinstance(model, SonarTextDecoder):
            raise ConversionError("simulated reload mismatch")

    monkeypatch.setattr(conversion_sonar, "_verify_reload", verify_then_fail)
    with pytest.raises(ConversionError, match="simulated"):
        convert_sonar(tmp_path / "new" / "deeper" / "out", encoder, decoder, num_heads=2)
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(conversion_sonar, "_verify_reload", real_verify)

    # A folder holding something else is never overwritten; the same model is replaced.
    other = tmp_path / "other"
    (other / "encoder").mkdir(parents=True)
    (other / "encoder" / "weights.bin").write_text("someone else's model")
    with pytest.raises(ConversionError, match=r"1 file\(s\) that no earlier conversion wrote.*: weights\.bin"):
        convert_sonar(other, encoder, decoder, num_heads=2)
    assert (other / "encoder" / "weights.bin").read_text() == "someone else's model"
    assert not (other / "decoder").exists()
    written = convert_sonar(tmp_path / "out", encoder, num_heads=2)
    assert written == {"encoder": tmp_path / "out" / "encoder"}
    convert_sonar(tmp_path / "out", encoder, decoder, num_heads=2)  # same encoder again (replaced) + a decoder
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["decoder", "encoder"]
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "out") == []


def test_a_failure_between_the_two_moves_keeps_the_old_encoder_and_decoder(tmp_path, monkeypatch):
    """`encoder/` and `decoder/` are one commit: when moving the second into place fails, the first is moved back."""
    encoder = save(tmp_path / "enc.pt", {"model": fs2_state("encoder")})
    decoder = save(tmp_path / "dec.pt", {"model": fs2_state("decoder")})
    output = tmp_path / "sonar"
    convert_sonar(output, encoder, decoder, num_heads=2)  # the old pair (float32)

    def snapshot():
        return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*")) if p.is_file()}

    old = snapshot()
    real_rename = Path.rename
    moves = []

    def rename(self, target):
        # the staging folders are new-0 (encoder) and new-1 (decoder); the second one's move fails
        if self.name == "new-1" and Path(target) == output / "decoder":
            raise OSError("simulated: disk detached between the moves")
        moves.append((self.name, Path(target).name))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="simulated"):
        convert_sonar(output, encoder, decoder, num_heads=2, dtype="float16")  # a new pair
    monkeypatch.setattr(Path, "rename", real_rename)
    assert ("new-0", "encoder") in moves  # the new encoder had been moved into place before the failure
    assert snapshot() == old  # ... and both old folders are back, byte for byte
    assert leftovers(tmp_path) == [] and leftovers(output) == []
    assert SonarTextEncoder.from_pretrained(output / "encoder").dtype == torch.float32


def test_cli_converts_casts_and_summarises(tmp_path):
    from sonar_llm_hf.testing.tiny import train_tiny_spm

    spm = train_tiny_spm(tmp_path / "spm.model", vocab_size=100)
    encoder = save(tmp_path / "enc.pt", {"model": fs2_state("encoder", vocab=310)})
    decoder = save(tmp_path / "dec.pt", {"model": fs2_state("decoder", vocab=310)})
    result = subprocess.run(
        [sys.executable, str(ROOT / "conversion" / "convert_sonar_to_hf.py"), "--encoder", str(encoder), "--decoder",
         str(decoder), "--tokenizer", str(spm), "--output", str(tmp_path / "out"), "--num-heads", "2",
         "--dtype", "bfloat16"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(re.search(r"^encoder: .*verified by reloading.*[\d,]+ parameters, BF16.*vocab 310", x) for x in lines)
    assert any(re.search(r"^decoder: .*verified by reloading.*BF16.*tokenizer: yes", x) for x in lines), lines
    for name, cls in (("encoder", SonarTextEncoder), ("decoder", SonarTextDecoder)):
        folder = tmp_path / "out" / name
        for file in ("model.safetensors", "config.json", "tokenizer.json", "modeling_sonar_text.py"):
            assert (folder / file).exists(), (name, file)
        loaded = cls.from_pretrained(folder)
        assert loaded.dtype == torch.bfloat16 and loaded.tokenizer is not None
        assert loaded.tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>"]) == [0, 1, 2, 3]
    expected = sum(p.numel() for p in build_decoder(torch.load(decoder)["model"], num_heads=2).parameters())
    assert f"{expected:,} parameters" in "\n".join(lines)


def test_cli_errors_exit_2_with_the_reason(tmp_path, capsys):
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("convert_sonar_to_hf", ROOT / "conversion" / "convert_sonar_to_hf.py")
    cli = module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.ORIGINAL_TO_CONVERTED_KEY_MAPPING == {"encoder": ENCODER_KEY_MAPPING, "decoder": DECODER_KEY_MAPPING}
    assert cli.main(["--output", str(tmp_path / "x")]) == 2
    assert "Give --encoder, --decoder or both" in capsys.readouterr().err
    bad = save(tmp_path / "bad.pt", {"weights": torch.zeros(1)})
    assert cli.main(["--encoder", str(bad), "--output", str(tmp_path / "x")]) == 2
    assert "not a SONAR fairseq2 checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------------------------------- full size


@pytest.mark.parametrize(
    "kind,cls,config_cls,tensors,params",
    [
        ("encoder", SonarTextEncoder, SonarTextEncoderConfig, 24 * 16 + 3, 766_091_264),
        ("decoder", SonarTextDecoder, SonarTextDecoderConfig, 24 * 26 + 4, 866_902_016),
    ],
)
def test_full_size_checkpoints_convert_completely_on_meta(kind, cls, config_cls, tensors, params):
    """Every key and shape of the real 24-layer, 256,206-token checkpoints goes through the converter's own path
    (config inference, mapping, permutation, architecture check) onto the default-size models, without memory."""
    state = fs2_state(kind, vocab=256206, dim=1024, layers=24, ffn=8192, device="meta")
    assert len(state) == tensors
    prepare = prepare_encoder if kind == "encoder" else prepare_decoder
    config, converted = prepare(state, num_heads=16)
    default = config_cls()
    for field in ("vocab_size", "d_model", f"{kind}_layers", f"{kind}_ffn_dim", f"{kind}_attention_heads",
                  "max_position_embeddings", "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
                  "activation_function", "scale_embedding"):  # fmt: skip
        assert getattr(config, field) == getattr(default, field), field
    for key in state:  # every fs2 key is matched by exactly one rule
        assert sum(bool(re.fullmatch(p, key)) for p in MAPPINGS[kind]) == 1, key
    sources = {}
    map_keys(state, MAPPINGS[kind], kind, sources=sources)
    assert sorted(sources.values()) == sorted(state)
    assert all(original_key(hf, MAPPINGS[kind]) == fs2 for hf, fs2 in sources.items())  # names in error messages
    with torch.device("meta"):
        model = cls(default)
    expected = model.state_dict(keep_vars=True)  # parameters themselves, so the tied pair is one object
    assert set(converted) == set(expected) and len(converted) == tensors
    assert all(tuple(converted[k].shape) == tuple(v.shape) for k, v in expected.items())
    check_against_model(converted, model, kind)
    assert sum(p.numel() for p in model.parameters()) == params  # REFERENCE §1.6
    unique = {id(t): t.numel() for t in expected.values()}  # the decoder's tied head counts once
    assert sum(unique.values()) == params
