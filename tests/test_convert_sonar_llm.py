"""convert_sonar_llm_to_hf and convert_all: both source layouts, presets on meta, verification, refusals, bad input.

The training-layout source is the reference fixture (`fixtures/reference/sonar_llm/checkpoint_step_7.pt`, written by
the reference training loop with its exact key prefixes, optimizer, scheduler and Python/numpy/torch RNG states);
Hub-layout folders and prefix/decoder variants are built from its model state.
"""

import copy
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_remote_code import run_without_package
from transformers import AutoModel, LlamaModel

from sonar_llm_hf import SONAR_LLM_PRESETS, SonarLLMConfig, SonarLLMForCausalSentenceModeling, llama_preset
from sonar_llm_hf.conversion.checkpoints import ConversionError, check_against_model, load_checkpoint, map_keys
from sonar_llm_hf.conversion.reference import ReferenceSonarLLM
from sonar_llm_hf.conversion.sonar import convert_sonar
from sonar_llm_hf.conversion.sonar_llm import (
    BACKBONE_KEY_MAPPING,
    _numpy_rng_globals,
    backbone_config_from_reference,
    check_backbone_shapes,
    matching_preset,
    read_source,
)

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "conversion"))
import convert_all  # noqa: E402
import convert_sonar_llm_to_hf as cli  # noqa: E402

REFERENCE = ROOT / "tests" / "fixtures" / "reference"
CHECKPOINT = REFERENCE / "sonar_llm" / "checkpoint_step_7.pt"
CONFIG = REFERENCE / "sonar_llm" / "SonarLLM_tiny.json"
LLAMA_VOCAB = 128256
# What the reference repo's SonarLLM_*.json hold besides the sizes (REFERENCE.md §2.2): the converter's own table.
from sonar_llm_hf.conversion.backbone import REFERENCE_COMMON  # noqa: E402

# -- fixtures and builders ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sonar_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sonar")
    a = REFERENCE / "a"
    convert_sonar(folder, a / "encoder.pt", a / "decoder.pt", REFERENCE / "spm.model", num_heads=4)
    return folder


@pytest.fixture(scope="module")
def reference_state():
    state, _ = read_source(CHECKPOINT)
    return state


@pytest.fixture(scope="module")
def converted_dir(sonar_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("converted") / "sonar-llm-tiny"
    report = cli.convert(CHECKPOINT, sonar_dir, output, config=CONFIG)
    return output, report


def reference_json(preset: str) -> dict:
    """A backbone config in the reference repo's layout (`SonarLLM_900M.json`): legacy RoPE keys, no kv heads."""
    return {"pretrained_model_name_or_path": "meta-llama/Llama-3.2-1B",
            "llama_config": {**REFERENCE_COMMON, **SONAR_LLM_PRESETS[preset]}}  # fmt: skip


def reference_keys(llama_config, embed_dim=1024, vocab=LLAMA_VOCAB, device="meta") -> dict:
    """The reference training checkpoint's backbone keys (REFERENCE.md §2.3) as tensors of the right shapes."""
    h, f, heads, hd = (llama_config.hidden_size, llama_config.intermediate_size, llama_config.num_attention_heads,
                       llama_config.head_dim)  # fmt: skip
    make = lambda *shape: torch.empty(*shape, device=device)  # noqa: E731
    state = {"llama_model.model.embed_tokens.weight": make(vocab, h), "llama_model.lm_head.weight": make(vocab, h),
             "llama_model.model.norm.weight": make(h), "forward_proj.linear.weight": make(h, embed_dim),
             "forward_proj.linear.bias": make(h), "reverse_proj.linear.weight": make(embed_dim, h),
             "reverse_proj.linear.bias": make(embed_dim)}  # fmt: skip
    for i in range(llama_config.num_hidden_layers):
        p = f"llama_model.model.layers.{i}."
        state.update({p + "self_attn.q_proj.weight": make(heads * hd, h),
                      p + "self_attn.k_proj.weight": make(heads * hd, h),
                      p + "self_attn.v_proj.weight": make(heads * hd, h),
                      p + "self_attn.o_proj.weight": make(h, heads * hd),
                      p + "mlp.gate_proj.weight": make(f, h), p + "mlp.up_proj.weight": make(f, h),
                      p + "mlp.down_proj.weight": make(h, f), p + "input_layernorm.weight": make(h),
                      p + "post_attention_layernorm.weight": make(h)})  # fmt: skip
    return state


def save_training_checkpoint(model_state: dict, path: Path) -> Path:
    """`model_state` in the reference's `save_full_checkpoint` envelope, with real optimizer/scheduler/RNG states."""
    from transformers.optimization import get_cosine_schedule_with_warmup

    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=1e-3, weight_decay=1e-3)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=2, num_training_steps=10)
    param.sum().backward()
    optimizer.step(), scheduler.step()
    torch.save({"model_state_dict": model_state, "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": scheduler.state_dict(), "epoch": 0, "step_in_epoch": 1, "global_step": 1,
                "random_rng_state": random.getstate(), "numpy_rng_state": np.random.get_state(),
                "torch_rng_state": torch.get_rng_state(), "cuda_rng_state_all": []}, path)  # fmt: skip
    return path


def hub_folder(path: Path, state: dict, wrapped: bool = True, add_begin: bool = True, **llama_overrides) -> Path:
    """The published Hub layout: config.json {llama_config, embed_dim, add_begin} and pytorch_model.bin."""
    path.mkdir(parents=True)
    llama = {**json.loads(CONFIG.read_text())["llama_config"], "vocab_size": 300, **llama_overrides}
    (path / "config.json").write_text(json.dumps({"llama_config": llama, "embed_dim": 32, "add_begin": add_begin}))
    model_state = {k: v for k, v in state.items() if not k.startswith("sonar_decoder.")}
    torch.save({"model_state_dict": model_state} if wrapped else model_state, path / "pytorch_model.bin")
    return path


def wrapper_predictions(state: dict, llama_config: dict, embeddings: torch.Tensor) -> torch.Tensor:
    """The reference wrapper's forward restated with transformers' Llama, straight from the source keys:
    `llama_model(inputs_embeds=forward_proj(E)).hidden_states[-1]` (= last_hidden_state) -> `reverse_proj`."""
    config = backbone_config_from_reference(llama_config)
    config.vocab_size = state["llama_model.model.embed_tokens.weight"].shape[0]
    llama = LlamaModel(config).eval()
    prefix = "llama_model.model."
    llama.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})  # strict
    linear = torch.nn.functional.linear
    with torch.no_grad():
        hidden = linear(embeddings, state["forward_proj.linear.weight"], state["forward_proj.linear.bias"])
        out = llama(inputs_embeds=hidden).last_hidden_state  # (B, T, H), after the final RMSNorm
        return linear(out, state["reverse_proj.linear.weight"], state["reverse_proj.linear.bias"])


def assert_reproduces_wrapper(folder: Path, state: dict) -> None:
    probe = torch.randn(3, 6, 32, generator=torch.Generator().manual_seed(1)) * 0.1
    model = AutoModel.from_pretrained(folder)
    with torch.no_grad():
        ours = model(probe).predicted_embeddings
    expected = wrapper_predictions(state, json.loads(CONFIG.read_text())["llama_config"], probe)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


# -- presets at full size, on meta --------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(SONAR_LLM_PRESETS))
def test_every_preset_maps_completely_on_meta(preset):
    config = SonarLLMConfig.from_preset(preset)
    state = reference_keys(config.llama_config)
    converted = map_keys(state, BACKBONE_KEY_MAPPING, preset)
    with torch.device("meta"):
        model = SonarLLMForCausalSentenceModeling(config)
    backbone = {k: v for k, v in model.state_dict().items() if not k.startswith("sonar_")}
    skeleton = torch.nn.Module()
    skeleton.state_dict = lambda: backbone
    check_against_model(converted, skeleton, preset)  # every key, every shape, nothing extra
    # the full-size shapes fit their own preset and no other
    check_backbone_shapes(state, config.llama_config, 1024, f"--preset {preset}")
    for other in SONAR_LLM_PRESETS:
        if other != preset:
            hidden = config.llama_config.hidden_size
            with pytest.raises(ConversionError, match=f"preset {other}.*checkpoint {hidden} "):
                check_backbone_shapes(state, llama_preset(other), 1024, f"--preset {other}")
    dropped = sum(state[k].numel() for k in ("llama_model.model.embed_tokens.weight", "llama_model.lm_head.weight"))
    assert dropped == 2 * LLAMA_VOCAB * config.llama_config.hidden_size


@pytest.mark.parametrize("preset", list(SONAR_LLM_PRESETS))
def test_reference_json_layout_gives_the_preset(preset, tmp_path):
    path = tmp_path / f"SonarLLM_{preset}.json"
    path.write_text(json.dumps(reference_json(preset)))
    from_json, embed_dim, _ = cli.expected_backbone(tmp_path / "ckpt.pt", config=path)
    from_preset, _, _ = cli.expected_backbone(tmp_path / "ckpt.pt", preset=preset)
    assert from_json == from_preset and embed_dim == 1024  # legacy rope_theta/rope_scaling -> rope_parameters
    assert matching_preset(backbone_config_from_reference(reference_json(preset)["llama_config"])) == preset


# -- the training-checkpoint layout --------------------------------------------------------------------------------


def test_converted_folder_is_complete_and_verified(converted_dir):
    output, report = converted_dir
    names = {p.name for p in output.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "README.md", "modeling_sonar_llm.py", "configuration_sonar_llm.py",
            "modeling_sonar_text.py"} <= names  # fmt: skip
    config = json.loads((output / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_sonar_llm.SonarLLMForCausalSentenceModeling"
    assert config["auto_map"]["AutoConfig"] == "configuration_sonar_llm.SonarLLMConfig"
    assert config["add_begin"] is False and config["llama_config"]["vocab_size"] == 1
    # no token ids outside the one-row vocabulary (transformers warns about them on every load)
    assert all(config["llama_config"][f"{name}_token_id"] is None for name in ("bos", "eos", "pad"))
    assert report["decoder_copy"] == "SONAR_DIR's; the checkpoint's own copy is identical to SONAR_DIR's"
    assert report["preset"] is None and report["add_begin"] is False
    assert report["verification"] == {"max_abs_diff": 0.0, "documents": 3}
    assert report["dropped_parameters"] == 2 * 300 * 32  # the tiny reference's token embedding and tied head
    mask = os.umask(0)
    os.umask(mask)
    assert (output.stat().st_mode & 0o777) == 0o777 & ~mask  # not the 0700 of a temporary folder
    assert ((output / "model.safetensors").stat().st_mode & 0o777) == 0o666 & ~mask
    model = AutoModel.from_pretrained(output)
    assert type(model) is SonarLLMForCausalSentenceModeling
    out = model.generate(
        [["The cat sat on the mat.", "It was happy."]], num_beams=1, max_new_sentences=1, max_length=12
    )
    assert len(out.sentences[0]) == 1


def test_converted_folder_reproduces_the_reference_wrapper(converted_dir, reference_state):
    from safetensors.torch import load_file

    output, _ = converted_dir
    # the reference's own outputs, recorded by the fixture script with fairseq2 and transformers 4.57
    tensors = load_file(REFERENCE / "sonar_llm" / "expected.safetensors")
    model = AutoModel.from_pretrained(output)
    with torch.no_grad():
        predicted = model(tensors["embeddings"]).predicted_embeddings
    torch.testing.assert_close(predicted, tensors["predicted"], rtol=0, atol=1e-6)
    # and the wrapper restated from the checkpoint's own keys, on another probe
    assert_reproduces_wrapper(output, reference_state)


def test_converted_folder_loads_with_remote_code_only(converted_dir, tmp_path):
    output, _ = converted_dir
    code = f"""
import json, torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(output)!r}, trust_remote_code=True)
out = model.generate([["The cat sat on the mat."]], num_beams=1, max_new_sentences=1, max_length=12)
print(json.dumps({{"module": type(model).__module__, "heads": model.config.llama_config.num_attention_heads,
                   "sentences": len(out.sentences[0])}}))
"""
    result = run_without_package(code, tmp_path)  # `import sonar_llm_hf` is asserted to fail there
    assert result == {"module": result["module"], "heads": 4, "sentences": 1}
    assert result["module"].startswith("transformers_modules")


@pytest.mark.parametrize(
    "source, layout",
    [
        ("checkpoint_step_7.pt", "sonar-space pipeline (sonar_decoder.model.decoder.*)"),
        ("one_level.pt", "decoder module (sonar_decoder.*)"),
        ("hub_with_decoder", "sonar-space pipeline (sonar_decoder.model.decoder.*)"),
        ("hub", "none bundled"),
    ],
)
def test_every_layout_the_reference_writes_converts_without_flags(sonar_dir, tmp_path, source, layout):
    """Fixtures written by the reference's own classes in the reference env (make_reference_fixtures.py): the
    training wrapper holding sonar-space's EmbeddingToTextModelPipeline, the decoder module itself, and the Hub
    layout with and without the decoder. The identical bundled decoder converts with no flag, and the report says
    which layout held it."""
    report = cli.convert(REFERENCE / "sonar_llm" / source, sonar_dir, tmp_path / "out", config=CONFIG)
    assert report["decoder_layout"] == layout
    expected = "absent" if layout == "none bundled" else "identical to SONAR_DIR's"
    assert report["decoder_copy"] == f"SONAR_DIR's; the checkpoint's own copy is {expected}" + (
        " from the checkpoint" if expected == "absent" else ""
    )
    assert_reproduces_wrapper(tmp_path / "out", reference_state_of(source))


def reference_state_of(source: str) -> dict:
    from sonar_llm_hf.conversion.sonar_llm import read_source

    return read_source(REFERENCE / "sonar_llm" / source)[0]


def test_a_differing_bundled_decoder_is_refused_naming_the_tensor(sonar_dir, tmp_path):
    with pytest.raises(ConversionError, match=r"largest difference 0\.5 in decoder\.layers\.0\.fc1\.weight"):
        cli.convert(REFERENCE / "sonar_llm" / "other_decoder.pt", sonar_dir, tmp_path / "out", config=CONFIG)
    assert not (tmp_path / "out").exists()


# -- the Hub layout --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [True, False], ids=["model_state_dict", "bare"])
def test_hub_layout_folder(sonar_dir, reference_state, tmp_path, wrapped):
    folder = hub_folder(tmp_path / "sonar-llm-tiny", reference_state, wrapped=wrapped)
    report = cli.convert(folder, sonar_dir, tmp_path / "out")  # the folder's own config.json
    assert report["config_source"] == "the folder's config.json"
    assert report["decoder_copy"] == "SONAR_DIR's; the checkpoint's own copy is absent from the checkpoint"
    assert report["dropped_parameters"] == 2 * 300 * 32
    assert AutoModel.from_pretrained(tmp_path / "out").config.add_begin is True
    assert_reproduces_wrapper(tmp_path / "out", reference_state)


def test_config_sources_must_agree(sonar_dir, reference_state, tmp_path):
    folder = hub_folder(tmp_path / "hub", reference_state)
    # same tensor shapes (4 x 8 = 2 x 16), different heads: only the config can tell, so a disagreement is refused
    other = json.loads(CONFIG.read_text())
    other["llama_config"].update(num_attention_heads=2, head_dim=16)
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(ConversionError, match=r"disagrees with the config\.json.*num_attention_heads: folder 4 vs"):
        cli.convert(folder, sonar_dir, tmp_path / "out", config=tmp_path / "other.json")
    with pytest.raises(ConversionError, match=r"--preset 100M disagrees.*hidden_size: folder 32 vs --preset 100M 512"):
        cli.convert(folder, sonar_dir, tmp_path / "out", preset="100M")
    assert cli.convert(folder, sonar_dir, tmp_path / "out", config=CONFIG)["config_source"] == f"--config {CONFIG}"
    assert not leftovers(tmp_path)


# -- safe loading --------------------------------------------------------------------------------------------------


def test_numpy_rng_state_needs_exactly_the_allow_listed_reconstructors(tmp_path):
    """np.random.get_state() pickles an ndarray: `_reconstruct`, `ndarray`, `dtype` as globals, and the
    UInt32DType instance that BUILD fills. Each is needed; numpy 1.x checkpoints name `numpy.core.multiarray`."""
    allowed = _numpy_rng_globals()
    checkpoint = load_checkpoint(CHECKPOINT, allowed_globals=allowed)
    assert checkpoint["numpy_rng_state"][1].dtype == np.uint32
    assert set(checkpoint) >= {"optimizer_state_dict", "scheduler_state_dict", "random_rng_state", "torch_rng_state"}
    uint32 = type(np.dtype("uint32"))
    groups = {"_reconstruct": lambda g: getattr(g, "__name__", "") == "_reconstruct",
              "ndarray": lambda g: g is np.ndarray, "dtype": lambda g: g is np.dtype,
              "UInt32DType": lambda g: g is uint32}  # fmt: skip
    for belongs in groups.values():
        fewer = [g for g in allowed if not belongs(g[0] if isinstance(g, tuple) else g)]
        with pytest.raises(ConversionError, match="not executed"):
            load_checkpoint(CHECKPOINT, allowed_globals=fewer)
    # a numpy 1.x writer (the reference's environment) names the reconstructor `numpy.core.multiarray._reconstruct`
    buffer = tmp_path / "numpy1.pt"
    torch.save({"numpy_rng_state": np.random.get_state()}, buffer, _use_new_zipfile_serialization=False)
    data = buffer.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in data
    buffer.write_bytes(data.replace(b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct"))
    state = load_checkpoint(buffer, allowed_globals=allowed)["numpy_rng_state"]
    assert state[1].dtype == np.uint32


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("slot", ["tensor", "numpy_rng_state"])
def test_code_pickles_are_refused_and_not_run(sonar_dir, reference_state, tmp_path, slot):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    if slot == "tensor":
        path.write_bytes(pickle.dumps({"model_state_dict": {"forward_proj.linear.weight": RunsCode(marker)}}))
    else:  # hidden among the RNG states, next to the numpy reconstructors that are allowed
        torch.save({"model_state_dict": dict(reference_state), "numpy_rng_state": RunsCode(marker)}, path)
    with pytest.raises(ConversionError, match=r"not executed.*posix\.system|not executed"):
        cli.convert(path, sonar_dir, tmp_path / "out", config=CONFIG)
    assert not marker.exists() and not (tmp_path / "out").exists()


# -- refusals and bad input ----------------------------------------------------------------------------------------


def test_refusals_name_the_keys(sonar_dir, reference_state, tmp_path):
    for change, message in (
        (
            lambda s: s.pop("llama_model.model.layers.1.mlp.up_proj.weight"),
            "missing 1: model.layers.1.mlp.up_proj.weight",
        ),
        (lambda s: s.__setitem__("llama_model.model.extra.weight", torch.zeros(2)), "llama_model.model.extra.weight"),
        (lambda s: s.__setitem__("reverse_proj.linear.bias", torch.zeros(7)), "sentence_out_proj.bias (7,) != (32,)"),
    ):
        state = dict(reference_state)
        change(state)
        path = save_training_checkpoint(state, tmp_path / "bad.pt")
        with pytest.raises(ConversionError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
            cli.convert(path, sonar_dir, tmp_path / "out", config=CONFIG)
    # not a SONAR-LLM checkpoint at all (a SONAR encoder)
    with pytest.raises(ConversionError, match="not a SONAR-LLM checkpoint"):
        cli.convert(REFERENCE / "a" / "encoder.pt", sonar_dir, tmp_path / "out", config=CONFIG)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_wrong_or_missing_backbone_config(sonar_dir, tmp_path):
    with pytest.raises(ConversionError, match=r"preset 900M.*hidden_size: checkpoint 32 vs config 1536"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", preset="900M")
    with pytest.raises(
        ConversionError,
        match=r"does not record how its attention splits into heads\. The weights "
        r"show hidden size 32, 2 layers, intermediate size 64, attention width 32 .*--num-attention-heads",
    ):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out")
    (tmp_path / "bad.json").write_text(json.dumps({"hidden_size": 32}))
    with pytest.raises(ConversionError, match="has no `llama_config`"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", config=tmp_path / "bad.json")
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_sonar_width_mismatch_and_bad_outputs(sonar_dir, tmp_path):
    wide = tmp_path / "wide"
    b = REFERENCE / "b"
    convert_sonar(wide, b / "encoder.pt", b / "decoder.pt", REFERENCE / "spm.model", num_heads=6)
    with pytest.raises(ConversionError, match="48-d but the checkpoint's projectors expect 32-d"):
        cli.convert(CHECKPOINT, wide, tmp_path / "out", config=CONFIG)
    with pytest.raises(ConversionError, match="SONAR_DIR must be the output of convert_sonar_to_hf.py"):
        cli.convert(CHECKPOINT, tmp_path / "nowhere", tmp_path / "out", config=CONFIG)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConversionError, match="already holds other files"):
        cli.convert(CHECKPOINT, sonar_dir, occupied, config=CONFIG)
    assert json.loads((occupied / "config.json").read_text()) == {"model_type": "bert"}
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConversionError, match="Cannot write|not a folder"):
        cli.convert(CHECKPOINT, sonar_dir, blocker / "out", config=CONFIG)
    with pytest.raises(ConversionError, match="not a folder"):
        cli.convert(CHECKPOINT, sonar_dir, blocker, config=CONFIG)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


def test_existing_output_is_replaced_only_by_the_same_conversion(converted_dir, sonar_dir, reference_state, tmp_path):
    output = tmp_path / "sonar-llm-tiny"
    shutil.copytree(converted_dir[0], output)
    cli.convert(CHECKPOINT, sonar_dir, output, config=CONFIG, dtype="bfloat16")  # a re-run: replaced
    assert AutoModel.from_pretrained(output).dtype == torch.bfloat16
    # another SONAR-LLM architecture in the folder
    original = (output / "config.json").read_bytes()
    config = json.loads(original)
    different = copy.deepcopy(config)
    different["llama_config"]["num_hidden_layers"] = 3
    (output / "config.json").write_text(json.dumps(different))
    with pytest.raises(ConversionError, match=r"different SONAR-LLM \(hidden 32, 3 layers"):
        cli.convert(CHECKPOINT, sonar_dir, output, config=CONFIG)
    (output / "config.json").write_bytes(original)
    # same architecture, converted from another source
    folder = hub_folder(tmp_path / "hub", reference_state)
    with pytest.raises(ConversionError, match="converted from checkpoint_step_7.pt, not from hub"):
        cli.convert(folder, sonar_dir, output)
    # files the conversion did not write (its manifest says which it did) would be deleted by replacing the folder,
    # whatever their names: notes, a user's own modeling code, a user's SentencePiece model
    for name in ("notes.txt", "my_modeling.py", "my.model"):
        (output / name).write_text("mine")
        with pytest.raises(
            ConversionError, match=rf"1 file\(s\) that no earlier conversion wrote.*: {name}\. Nothing"
        ):
            cli.convert(CHECKPOINT, sonar_dir, output, config=CONFIG)
        assert (output / name).read_text() == "mine" and not leftovers(tmp_path)
        (output / name).unlink()
    # a file the conversion wrote, changed since, is the user's too
    with open(output / "generation_config.json", "a") as handle:
        handle.write("\n")
    with pytest.raises(ConversionError, match="generation_config.json"):
        cli.convert(CHECKPOINT, sonar_dir, output, config=CONFIG)


def test_failures_after_loading_leave_nothing(sonar_dir, tmp_path, monkeypatch):
    import sonar_llm_hf.conversion.model_card as model_card

    # the verification against the independent reference build fails
    real = ReferenceSonarLLM.forward
    monkeypatch.setattr(ReferenceSonarLLM, "forward", lambda self, e: real(self, e) + 1e-3)
    with pytest.raises(ConversionError, match="differ from the reference build .* by 0.001 > 1e-05"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "deep" / "out", config=CONFIG)
    assert not (tmp_path / "deep").exists()
    monkeypatch.setattr(ReferenceSonarLLM, "forward", real)
    # writing fails half-way (after the weights, at the model card)
    monkeypatch.setattr(model_card, "build_model_card", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", config=CONFIG)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# -- the command line and convert_all --------------------------------------------------------------------------------


def test_cli(sonar_dir, tmp_path, capsys):
    script = ROOT / "conversion" / "convert_sonar_llm_to_hf.py"
    ok = subprocess.run([sys.executable, str(script), "--checkpoint", str(CHECKPOINT), "--sonar", str(sonar_dir),
                         "--config", str(CONFIG), "--output", str(tmp_path / "out")],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "dropped 19,200 parameters" in ok.stdout and "identical to SONAR_DIR" in ok.stdout
    assert "matches preset: none" in ok.stdout and "WARNING" not in ok.stderr
    assert cli.main(["--checkpoint", str(CHECKPOINT), "--sonar", str(sonar_dir), "--preset", "100M",
                     "--output", str(tmp_path / "out2")]) == 2  # fmt: skip
    assert "does not fit the backbone config from --preset 100M (preset 100M)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--checkpoint", "x", "--sonar", "y", "--output", "z", "--private"])
    assert "need --push-to-hub" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--checkpoint", "x", "--sonar", "y", "--output", "z", "--preset", "900M", "--config", "c.json"])


def test_convert_all_finds_names_and_converts(sonar_dir, reference_state, tmp_path, capsys):
    originals = tmp_path / "originals"
    # what CHECKPOINTS.md's downloads look like, as placeholders: only discovery runs on these
    for relative in ("900M/checkpoint_step_16480.pt", "sonar-llm-300m.pt", "600M/checkpoint_step_1.pt",
                     "600M/checkpoint_step_2.pt", "misc/checkpoint_step_5.pt",
                     "900M/sonar_eos_embedding.pt"):  # fmt: skip
        (originals / relative).parent.mkdir(parents=True, exist_ok=True)
        (originals / relative).write_bytes(b"")
    hub_folder(originals / "sonar-llm-1.3b", reference_state)
    (originals / "sonar").mkdir()
    (originals / "sonar" / "config.json").write_text(json.dumps({"model_type": "sonar_text_encoder"}))
    found, skipped = convert_all.find_originals(originals)
    assert {item["name"]: (item["preset"], item["config"]) for item in found} == {
        "sonar-llm-1.3b": (None, None), "sonar-llm-900m": ("900M", None), "sonar-llm-300m": ("300M", None),
        "sonar-llm-600m-step1": ("600M", None), "sonar-llm-600m-step2": ("600M", None),
    }  # fmt: skip
    assert [s.split(":")[0] for s in skipped] == [str(originals / "misc" / "checkpoint_step_5.pt")]

    # real conversions: a training checkpoint beside its reference JSON (twice: two steps), and a Hub folder
    originals = tmp_path / "real"
    (originals / "tiny").mkdir(parents=True)
    shutil.copy(CONFIG, originals / "tiny" / CONFIG.name)
    shutil.copy(CHECKPOINT, originals / "tiny" / "checkpoint_step_7.pt")
    shutil.copy(CHECKPOINT, originals / "tiny" / "checkpoint_step_3.pt")
    hub_folder(originals / "hub", reference_state)
    assert convert_all.main([str(originals), "--sonar", str(sonar_dir), "--output-root", str(tmp_path / "out"),
                             "--dry-run"]) == 0  # fmt: skip
    assert not (tmp_path / "out").exists()
    assert convert_all.main([str(originals), "--sonar", str(sonar_dir), "--output-root", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "sonar-llm-hub", "sonar-llm-tiny-step3", "sonar-llm-tiny-step7"]  # fmt: skip
    assert json.loads((tmp_path / "out" / "sonar-llm-hub" / "config.json").read_text())["add_begin"] is True
    # a failing original is reported; the others still convert
    shutil.rmtree(originals / "tiny")
    (originals / "broken").mkdir()
    (originals / "broken" / "config.json").write_text(json.dumps({"llama_config": {"hidden_size": 8}}))
    torch.save({"model_state_dict": {"x": torch.zeros(1)}}, originals / "broken" / "pytorch_model.bin")
    capsys.readouterr()
    assert convert_all.main([str(originals), "--sonar", str(sonar_dir), "--output-root", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert "broken: error: The `llama_config` of" in err and "1 of 2 original(s) failed" in err
    assert [p.name for p in (tmp_path / "out2").iterdir()] == ["sonar-llm-hub"]
