"""convert_sonar_llm_to_hf: both source layouts, strictness, presets on meta, refusals, model card, publishing."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from test_remote_code import run_without_package
from transformers import AutoModel

from sonar_llm_hf import SONAR_LLM_PRESETS, SonarLLMConfig, SonarLLMForCausalSentenceModeling, llama_preset
from sonar_llm_hf.conversion_sonar import convert_sonar
from sonar_llm_hf.conversion_sonar_llm import (
    BACKBONE_KEY_MAPPING,
    convert_sonar_llm,
    read_source,
)
from sonar_llm_hf.conversion_utils import ConversionError, check_against_model, map_keys

ROOT = Path(__file__).parents[1]
REFERENCE = ROOT / "tests" / "fixtures" / "reference"
CHECKPOINT = REFERENCE / "sonar_llm" / "checkpoint_step_7.pt"
CONFIG = REFERENCE / "sonar_llm" / "SonarLLM_tiny.json"


@pytest.fixture(scope="module")
def sonar_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sonar")
    convert_sonar(folder, REFERENCE / "a" / "encoder.pt", REFERENCE / "a" / "decoder.pt", REFERENCE / "spm.model", num_heads=4)
    return folder


@pytest.fixture(scope="module")
def reference_state():
    state, _ = read_source(CHECKPOINT)
    return state


@pytest.fixture(scope="module")
def converted_dir(sonar_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("converted") / "sonar-llm-tiny"
    report = convert_sonar_llm(CHECKPOINT, sonar_dir, output, config_json=CONFIG)
    return output, report


def reference_keys(llama_config, embed_dim=1024, vocab=128256, device="meta") -> dict:
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
        state.update({p + "self_attn.q_proj.weight": make(heads * hd, h), p + "self_attn.k_proj.weight": make(heads * hd, h),
                      p + "self_attn.v_proj.weight": make(heads * hd, h), p + "self_attn.o_proj.weight": make(h, heads * hd),
                      p + "mlp.gate_proj.weight": make(f, h), p + "mlp.up_proj.weight": make(f, h),
                      p + "mlp.down_proj.weight": make(h, f), p + "input_layernorm.weight": make(h),
                      p + "post_attention_layernorm.weight": make(h)})  # fmt: skip
    return state


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
    check_against_model(converted, skeleton, preset)
    dropped = sum(state[k].numel() for k in ("llama_model.model.embed_tokens.weight", "llama_model.lm_head.weight"))
    assert dropped == 2 * 128256 * config.llama_config.hidden_size


def test_converted_folder_is_complete_and_verified(converted_dir):
    output, report = converted_dir
    names = {p.name for p in output.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md",
            "modeling_sonar_llm.py", "configuration_sonar_llm.py"} <= names  # fmt: skip
    config = json.loads((output / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_sonar_llm.SonarLLMForCausalSentenceModeling"
    assert config["add_begin"] is False and report["decoder_copy"] == "identical to SONAR_DIR"
    model = AutoModel.from_pretrained(output)
    out = model.generate([["The cat sat on the mat.", "It was happy."]], num_beams=1, max_new_sentences=1, max_length=12)
    assert len(out.sentences[0]) == 1


def test_converted_folder_reproduces_the_reference_wrapper(converted_dir):
    from safetensors.torch import load_file

    output, _ = converted_dir
    tensors = load_file(REFERENCE / "sonar_llm" / "expected.safetensors")
    model = AutoModel.from_pretrained(output)
    with torch.no_grad():
        torch.testing.assert_close(model(tensors["embeddings"]).predicted_embeddings, tensors["predicted"], rtol=0, atol=1e-6)


def test_converted_folder_loads_with_remote_code_only(converted_dir, tmp_path):
    output, _ = converted_dir
    code = f"""
import json, torch
from transformers import AutoModel
model = AutoModel.from_pretrained({str(output)!r}, trust_remote_code=True)
print(json.dumps({{"module": type(model).__module__, "heads": model.config.llama_config.num_attention_heads}}))
"""
    result = run_without_package(code, tmp_path)
    assert result["module"].startswith("transformers_modules") and result["heads"] == 4


def test_model_card_metadata(converted_dir, sonar_dir, tmp_path):
    output, _ = converted_dir
    card = ModelCard.load(output / "README.md")
    assert card.data.license == "cc-by-nc-4.0"
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.base_model == "facebook/SONAR"
    assert {"sonar", "sonar-llm", "custom_code"} <= set(card.data.tags)
    assert "CC-BY-NC-4.0" in card.text and "trust_remote_code=True" in card.text
    from sonar_llm_hf.model_card import build_model_card

    card_900m = build_model_card("org/sonar-llm-900m", "900M", SonarLLMConfig.from_preset("900M"), "x", 0, 1, 2)
    results = {(r.dataset_name, r.metric_type): r.metric_value for r in card_900m.data.eval_results}
    assert results[("TinyStories", "rougeL")] == 39.4 and results[("TinyStories", "meteor")] == 32.9
    assert "model-index" in str(card_900m)


def test_hub_layout_folder(sonar_dir, reference_state, tmp_path):
    folder = tmp_path / "hub"
    folder.mkdir()
    llama = json.loads(CONFIG.read_text())["llama_config"]
    (folder / "config.json").write_text(json.dumps({"llama_config": llama, "embed_dim": 32, "add_begin": True}))
    model_state = {k: v for k, v in reference_state.items() if not k.startswith("sonar_decoder.")}
    torch.save({"model_state_dict": model_state}, folder / "pytorch_model.bin")
    report = convert_sonar_llm(folder, sonar_dir, tmp_path / "out")
    assert report["decoder_copy"].startswith("absent")
    assert AutoModel.from_pretrained(tmp_path / "out").config.add_begin is True


def test_refusals(sonar_dir, reference_state, tmp_path):
    # a checkpoint missing a key, with an extra key, or with a mis-shaped tensor names it
    for change, message in (
        (lambda s: s.pop("llama_model.model.layers.1.mlp.up_proj.weight"), "model.layers.1.mlp.up_proj.weight"),
        (lambda s: s.__setitem__("llama_model.model.extra.weight", torch.zeros(2)), "llama_model.model.extra.weight"),
        (lambda s: s.__setitem__("reverse_proj.linear.bias", torch.zeros(7)), "sentence_out_proj.bias"),
    ):
        state = dict(reference_state)
        change(state)
        path = tmp_path / "bad.pt"
        torch.save({"model_state_dict": state}, path)
        with pytest.raises(ConversionError, match=message.replace(".", r"\.")):
            convert_sonar_llm(path, sonar_dir, tmp_path / "out", config_json=CONFIG)
    assert not (tmp_path / "out").exists()
    # a wrong preset is named
    with pytest.raises(ConversionError, match=r"preset 900M.*hidden_size: checkpoint 32 vs config 1536"):
        convert_sonar_llm(CHECKPOINT, sonar_dir, tmp_path / "out", preset="900M")
    # no backbone config at all
    with pytest.raises(ConversionError, match="--config or --preset"):
        convert_sonar_llm(CHECKPOINT, sonar_dir, tmp_path / "out")


def test_sonar_width_mismatch_and_bad_outputs(sonar_dir, tmp_path):
    wide = tmp_path / "wide"
    convert_sonar(wide, REFERENCE / "b" / "encoder.pt", REFERENCE / "b" / "decoder.pt", REFERENCE / "spm.model", num_heads=6)
    with pytest.raises(ConversionError, match="48-d but the checkpoint's projectors expect 32-d"):
        convert_sonar_llm(CHECKPOINT, wide, tmp_path / "out", config_json=CONFIG)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConversionError, match="already holds other files"):
        convert_sonar_llm(CHECKPOINT, sonar_dir, occupied, config_json=CONFIG)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConversionError, match="Cannot write|not a folder"):
        convert_sonar_llm(CHECKPOINT, sonar_dir, blocker / "out", config_json=CONFIG)


def test_code_pickles_are_refused_and_not_run(sonar_dir, tmp_path):
    class RunsCode:
        def __reduce__(self):
            return (exec, ("open('/tmp/sonar_llm_pwned', 'w').write('x')",))

    marker = Path("/tmp/sonar_llm_pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"model_state_dict": {"forward_proj.linear.weight": RunsCode()}}))
    with pytest.raises(ConversionError, match="not executed"):
        convert_sonar_llm(path, sonar_dir, tmp_path / "out", config_json=CONFIG)
    assert not marker.exists()


class FakeHfApi:
    """Stands in for the Hub at the network boundary only: records the calls."""

    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        assert (Path(kwargs["folder_path"]) / "model.safetensors").exists()
        return "https://huggingface.co/org/tiny/commit/abc"


def test_push_to_hub(sonar_dir, tmp_path):
    api = FakeHfApi()
    report = convert_sonar_llm(CHECKPOINT, sonar_dir, tmp_path / "out", config_json=CONFIG, repo_id="org/tiny",
                               push_to_hub=True, private=True, revision="v1", commit_message="first", api=api)  # fmt: skip
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is True
    assert api.calls[2][2]["revision"] == "v1" and api.calls[2][2]["commit_message"] == "first"
    assert report["commit"].endswith("abc")


def test_cli(sonar_dir, tmp_path):
    script = ROOT / "conversion" / "convert_sonar_llm_to_hf.py"
    ok = subprocess.run([sys.executable, str(script), "--checkpoint", str(CHECKPOINT), "--sonar", str(sonar_dir),
                         "--config", str(CONFIG), "--output", str(tmp_path / "out")],
                        capture_output=True, text=True, timeout=300)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "dropped 19,200 parameters" in ok.stdout and "identical to SONAR_DIR" in ok.stdout
    bad = subprocess.run([sys.executable, str(script), "--checkpoint", str(CHECKPOINT), "--sonar", str(sonar_dir),
                          "--preset", "100M", "--output", str(tmp_path / "out2")],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert bad.returncode == 2 and "does not fit the backbone config" in bad.stderr


def test_backbone_presets_hold_the_paper_sizes():
    assert llama_preset("900M").head_dim * llama_preset("900M").num_attention_heads == 2048
