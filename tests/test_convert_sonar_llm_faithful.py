"""Conversion never hands back a different model than the checkpoint holds (issue 12, points 1-4).

On the reference's tiny training checkpoint (`fixtures/reference/sonar_llm/checkpoint_step_7.pt`, written by the
reference training loop) and Hub-layout folders built from it:
1. a bundled SONAR decoder that differs from `--sonar`'s is an error naming the largest difference, unless the user
   chooses (`--keep-checkpoint-decoder` converts the checkpoint's own, `--use-sonar-decoder` takes `--sonar`'s);
2. the verification rebuilds the reference independently (transformers' LlamaForCausalLM from the reference's JSON),
   so a wrong head split, RoPE setting or norm epsilon fails it;
3. `add_begin` is read where recorded, stated with `--add-begin/--no-add-begin`, and recorded in the model card;
4. shapes that do not fit a config are described, with the nearest preset; without a config only the heads are asked.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from test_convert_sonar_llm import (  # noqa: F401 (fixtures)
    CHECKPOINT,
    CONFIG,
    REFERENCE,
    cli,
    converted_dir,
    hub_folder,
    leftovers,
    reference_keys,
    reference_state,
    save_training_checkpoint,
    sonar_dir,
)
from transformers import AutoModel

from sonar_llm_hf import llama_preset
from sonar_llm_hf.conversion import backbone as conversion_backbone
from sonar_llm_hf.conversion.backbone import check_backbone_shapes, preset_reference_json, resolve_backbone
from sonar_llm_hf.conversion.checkpoints import ConversionError
from sonar_llm_hf.conversion.reference import ReferenceSonarLLM, reference_llama_config
from sonar_llm_hf.conversion.sonar import convert_sonar
from sonar_llm_hf.conversion.sonar_llm import convert_sonar_llm

Q_KEY = "decoder.layers.0.self_attn.q_proj.weight"


def write_config(path, **llama_changes):
    config = json.loads(CONFIG.read_text())
    config["llama_config"].update(llama_changes)
    path.write_text(json.dumps(config))
    return path


def card(folder) -> str:
    return (folder / "README.md").read_text()


# -- 1. the bundled decoder ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def changed_decoder(reference_state, tmp_path_factory):
    """A training checkpoint whose own SONAR decoder was trained on (one tensor moved by 0.5)."""
    state = dict(reference_state)
    key = next(k for k in state if k.startswith("sonar_decoder.") and k.endswith(Q_KEY))
    state[key] = state[key] + 0.5
    return save_training_checkpoint(state, tmp_path_factory.mktemp("changed") / "changed.pt"), state[key]


def test_a_differing_decoder_is_an_error_unless_chosen(sonar_dir, changed_decoder, tmp_path, capsys):
    path, trained_q = changed_decoder
    args = ["--checkpoint", str(path), "--sonar", str(sonar_dir), "--config", str(CONFIG), "--output"]
    assert cli.main([*args, str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert f"largest difference 0.5 in {Q_KEY}" in err
    assert "--keep-checkpoint-decoder" in err and "--use-sonar-decoder" in err and "WARNING" not in err
    assert not (tmp_path / "refused").exists() and not leftovers(tmp_path)

    # the checkpoint's own decoder, and the card says so
    assert cli.main([*args, str(tmp_path / "kept"), "--keep-checkpoint-decoder"]) == 0
    assert "SONAR decoder: the checkpoint's own (--keep-checkpoint-decoder)" in capsys.readouterr().out
    kept = AutoModel.from_pretrained(tmp_path / "kept")
    assert torch.equal(kept.state_dict()[f"sonar_decoder.{Q_KEY}"], trained_q)
    assert "| SONAR decoder | the checkpoint's own (--keep-checkpoint-decoder); it differs" in card(tmp_path / "kept")
    assert len(kept.generate([["The cat sat on the mat."]], num_beams=1, max_new_sentences=1, max_length=8)
               .sentences[0]) == 1  # fmt: skip

    # --sonar's decoder, because the user said so
    assert cli.main([*args, str(tmp_path / "sonar"), "--use-sonar-decoder"]) == 0
    used = AutoModel.from_pretrained(tmp_path / "sonar").state_dict()[f"sonar_decoder.{Q_KEY}"]
    theirs = AutoModel.from_pretrained(sonar_dir / "decoder").state_dict()[Q_KEY]
    assert torch.equal(used, theirs) and not torch.equal(used, trained_q)
    assert "| SONAR decoder | the `--sonar` folder's, as asked (--use-sonar-decoder)" in card(tmp_path / "sonar")
    with pytest.raises(SystemExit):
        cli.main([*args, str(tmp_path / "x"), "--use-sonar-decoder", "--keep-checkpoint-decoder"])


def test_a_decoder_that_cannot_be_compared_is_an_error(sonar_dir, reference_state, tmp_path):
    state = {**reference_state, "sonar_decoder.model.decoder.extra.weight": torch.zeros(2)}
    path = save_training_checkpoint(state, tmp_path / "odd.pt")
    with pytest.raises(ConversionError, match=r"not comparable with SONAR_DIR's: .*unexpected key.*: extra\.weight"):
        cli.convert(path, sonar_dir, tmp_path / "out", config=CONFIG)
    with pytest.raises(ConversionError, match="--keep-checkpoint-decoder: the checkpoint's SONAR decoder cannot be"):
        cli.convert(path, sonar_dir, tmp_path / "out", config=CONFIG, decoder="checkpoint")
    report = cli.convert(path, sonar_dir, tmp_path / "out", config=CONFIG, decoder="sonar")
    assert report["decoder_copy"].startswith("SONAR_DIR's, as asked (--use-sonar-decoder); the checkpoint's own "
                                             "copy not comparable")  # fmt: skip
    # a Hub folder holds no decoder: there is nothing to keep
    folder = hub_folder(tmp_path / "hub", reference_state)
    with pytest.raises(ConversionError, match="holds no SONAR decoder of its own"):
        cli.convert(folder, sonar_dir, tmp_path / "out2", decoder="checkpoint")


# -- 2. verification against an independent build of the reference ----------------------------------------------------


def test_the_independent_reference_build_reproduces_the_reference(reference_state):
    """Built from the JSON and the checkpoint alone, it gives what the reference code recorded (fairseq2 env)."""
    recorded = load_file(REFERENCE / "sonar_llm" / "expected.safetensors")
    reference = ReferenceSonarLLM(json.loads(CONFIG.read_text())["llama_config"], reference_state)
    torch.testing.assert_close(reference(recorded["embeddings"]), recorded["predicted"], rtol=0, atol=1e-6)
    assert reference.llama_model.config.vocab_size == 300 and reference.dead_keys_absent == []
    # the released 600M's 26 x 64 heads in a 1280-wide model: transformers 4 (the reference's) accepted it
    config = reference_llama_config(preset_reference_json("600M"), None)
    assert (config.num_attention_heads, config.head_dim, config.vocab_size) == (26, 64, 128256)


WRONG = {"head split 4x8 -> 2x16": dict(num_attention_heads=2, head_dim=16), "rope_theta": dict(rope_theta=100.0),
         "rms_norm_eps": dict(rms_norm_eps=1e-4)}  # fmt: skip


@pytest.mark.parametrize("change", WRONG.values(), ids=WRONG.keys())
def test_a_wrong_architecture_fails_verification(
    sonar_dir,
    reference_state,
    tmp_path,
    monkeypatch,
    change,
):
    # a --config that disagrees with what a Hub folder records (the CLI refuses that before loading; the library
    # converts the --config's architecture and the verification, built from the folder's own record, catches it)
    folder = hub_folder(tmp_path / "hub", reference_state)
    wrong = write_config(tmp_path / "wrong.json", **change)
    with pytest.raises(ConversionError, match=r"differ from the reference build .* by [0-9.e-]+ > 1e-05"):
        convert_sonar_llm(folder, sonar_dir, tmp_path / "out", config_json=wrong)
    # our translation of a right --config goes wrong: the independent build does not share it
    real = conversion_backbone.backbone_config_from_reference
    monkeypatch.setattr(conversion_backbone, "backbone_config_from_reference", lambda llama: real({**llama, **change}))
    with pytest.raises(ConversionError, match=r"differ from the reference build .* > 1e-05"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", config=CONFIG)
    assert not (tmp_path / "out").exists() and not leftovers(tmp_path)


# -- 3. add_begin --------------------------------------------------------------------------------------------------


def test_add_begin_is_read_stated_and_recorded(sonar_dir, reference_state, tmp_path, capsys):
    def begin(folder):
        return json.loads((folder / "config.json").read_text())["add_begin"]

    # not recorded in a training checkpoint: no, and the card says why
    report = cli.convert(CHECKPOINT, sonar_dir, tmp_path / "default", config=CONFIG)
    assert begin(tmp_path / "default") is False and "| begin sentence | no (not recorded in the checkpoint" in card(
        tmp_path / "default")  # fmt: skip
    assert report["add_begin_source"].startswith("not recorded")
    # stated on the command line
    args = ["--checkpoint", str(CHECKPOINT), "--sonar", str(sonar_dir), "--config", str(CONFIG), "--output"]
    assert cli.main([*args, str(tmp_path / "flag"), "--add-begin"]) == 0
    assert "add_begin: true (--add-begin)" in capsys.readouterr().out
    assert begin(tmp_path / "flag") is True and "prepended to prompts) (--add-begin)" in card(tmp_path / "flag")
    # recorded in a --config JSON (the Hub config.json layout: llama_config, embed_dim, add_begin)
    config = json.loads(CONFIG.read_text())
    (tmp_path / "SonarLLM_begin.json").write_text(json.dumps({**config, "add_begin": True}))
    cli.convert(CHECKPOINT, sonar_dir, tmp_path / "json", config=tmp_path / "SonarLLM_begin.json")
    assert begin(tmp_path / "json") is True and "(--config SonarLLM_begin.json)" in card(tmp_path / "json")
    assert str(tmp_path) not in card(tmp_path / "json")  # no local paths in a public card
    with pytest.raises(ConversionError, match=r"--no-add-begin contradicts `add_begin: true` in --config"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "x", config=tmp_path / "SonarLLM_begin.json", add_begin=False)
    (tmp_path / "bad.json").write_text(json.dumps({**config, "add_begin": "yes"}))
    with pytest.raises(ConversionError, match="`add_begin` in --config .* is 'yes'; expected true or false"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "x", config=tmp_path / "bad.json")
    # a Hub folder's own, also when --config gives the (same) backbone
    folder = hub_folder(tmp_path / "hub", reference_state, add_begin=True)
    cli.convert(folder, sonar_dir, tmp_path / "hub-own")
    cli.convert(folder, sonar_dir, tmp_path / "hub-config", config=CONFIG)
    assert begin(tmp_path / "hub-own") is True and begin(tmp_path / "hub-config") is True
    assert "(the folder's config.json)" in card(tmp_path / "hub-config")
    with pytest.raises(ConversionError, match="--no-add-begin contradicts `add_begin: true` in the folder's config"):
        cli.convert(folder, sonar_dir, tmp_path / "x", add_begin=False)
    assert not (tmp_path / "x").exists()


# -- 4. shapes tell more than presets --------------------------------------------------------------------------------


def test_a_preset_that_does_not_fit_names_what_the_weights_show(sonar_dir, tmp_path):
    with pytest.raises(ConversionError) as error:
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", preset="900M")
    message = str(error.value)
    assert "hidden_size: checkpoint 32 vs config 1536" in message
    assert ("The weights show hidden size 32, 2 layers, intermediate size 64, attention width 32 (key/value 32), "
            "projectors 32 -> 32 (forward_proj) and 32 -> 32 (reverse_proj).") in message  # fmt: skip
    assert "The nearest preset, 100M, differs in" in message
    # full-size shapes (on meta): the 900M weights under the 600M preset
    state = reference_keys(llama_preset("900M"))
    with pytest.raises(ConversionError, match=r"hidden size 1536, 17 layers, intermediate size 6144, attention width "
                       r"2048 .*projectors 1024 -> 1536 .*They fit preset 900M exactly"):  # fmt: skip
        check_backbone_shapes(state, llama_preset("600M"), 1024, "--preset 600M")


def test_without_a_config_only_the_heads_are_asked(
    sonar_dir,
    converted_dir,
    reference_state,
    tmp_path,
    capsys,
):
    with pytest.raises(ConversionError, match=r"They fit preset 900M exactly\. Pass --num-attention-heads N \(N must "
                       r"divide 2048\)"):  # fmt: skip
        resolve_backbone(state=reference_keys(llama_preset("900M")))
    with pytest.raises(ConversionError, match="3 attention heads do not divide the attention width 32"):
        cli.convert(CHECKPOINT, sonar_dir, tmp_path / "out", num_attention_heads=3)
    assert cli.main(["--checkpoint", str(CHECKPOINT), "--sonar", str(sonar_dir), "--output", str(tmp_path / "out"),
                     "--num-attention-heads", "4"]) == 0  # fmt: skip
    assert "backbone config from the checkpoint's shapes with 4 attention heads" in capsys.readouterr().out
    inferred = AutoModel.from_pretrained(tmp_path / "out")
    llama = inferred.config.llama_config
    assert (llama.num_attention_heads, llama.head_dim, llama.num_key_value_heads) == (4, 8, 4)
    probe = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # the same model as the reference JSON's conversion
        same = AutoModel.from_pretrained(converted_dir[0])(probe).predicted_embeddings
        assert torch.equal(inferred(probe).predicted_embeddings, same)
    with pytest.raises(SystemExit):
        cli.main(["--checkpoint", "x", "--sonar", "y", "--output", "z", "--preset", "900M", "--num-attention-heads",
                  "4"])  # fmt: skip
    with pytest.raises(ConversionError, match="a Hub folder's config.json record the heads already"):
        cli.convert(hub_folder(tmp_path / "hub", reference_state), sonar_dir, tmp_path / "x", num_attention_heads=4)


def test_a_sonar_folder_without_tokenizer_is_refused(tmp_path):
    a = REFERENCE / "a"
    convert_sonar(tmp_path / "sonar", a / "encoder.pt", a / "decoder.pt", num_heads=4)  # no --tokenizer
    with pytest.raises(ConversionError, match="holds no tokenizer.*--tokenizer"):
        cli.convert(CHECKPOINT, tmp_path / "sonar", tmp_path / "out", config=CONFIG)
    assert not (tmp_path / "out").exists()
