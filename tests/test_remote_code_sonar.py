"""Converted SONAR folders work as Hub remote code: a fresh interpreter that cannot import `sonar_llm_hf` loads them
with `trust_remote_code=True` (offline) and computes exactly what the installed package computes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import sonar_llm_hf
from sonar_llm_hf import SonarTextDecoder, SonarTextEncoder
from sonar_llm_hf.conversion.sonar import convert_sonar
from sonar_llm_hf.testing.tiny import make_fs2_sonar_state_dict, train_tiny_spm

REPO = Path(sonar_llm_hf.__file__).resolve().parents[1]
TEXTS = ["The cat sat on the mat.", "Hello, my name is Paul.", "Le chat est sur le tapis."]
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "configuration_sonar_text.py",
         "modeling_sonar_text.py", "generation_sonar_text.py", "tokenization_sonar.py"]  # fmt: skip
AUTO_MAP = {
    "encoder": {"AutoConfig": "configuration_sonar_text.SonarTextEncoderConfig",
                "AutoModel": "modeling_sonar_text.SonarTextEncoder"},
    "decoder": {"AutoConfig": "configuration_sonar_text.SonarTextDecoderConfig",
                "AutoModel": "modeling_sonar_text.SonarTextDecoder"},
}  # fmt: skip

# Prelude of the child interpreter: take away every way to import the package (the editable-install finder, the
# repository on sys.path; a regular install would be blocked by the last resort) and prove it is gone.
HIDE_PACKAGE = f"""
import sys
from pathlib import Path
_repo = Path({str(REPO)!r})
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _repo]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(type(f), "__module__", "")
                    and "__editable__" not in getattr(f, "__module__", "")]
try:
    import sonar_llm_hf
except ImportError:
    pass
else:  # installed non-editably: block it
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == "sonar_llm_hf" or name.startswith("sonar_llm_hf."):
                raise ImportError("sonar_llm_hf is deliberately unavailable here")
    for name in [m for m in sys.modules if m == "sonar_llm_hf" or m.startswith("sonar_llm_hf.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _Block())
try:
    import sonar_llm_hf
    raise SystemExit("sonar_llm_hf should not be importable here")
except ImportError:
    pass
"""

CHILD = """
import json, torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
folder = {folder!r}
texts = {texts!r}
result = {{}}
try:
    AutoModel.from_pretrained(folder + "/encoder")
    result["without_trust"] = "loaded"
except ValueError as error:
    result["without_trust"] = str(error)
encoder = AutoModel.from_pretrained(folder + "/encoder", trust_remote_code=True).eval()
decoder = AutoModel.from_pretrained(folder + "/decoder", trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder + "/encoder", trust_remote_code=True)
# Without the flag, AutoTokenizer first asks (stdin) whether to run the folder's config code; refused, it still
# finds the tokenizer, which needs no custom code.
plain = AutoTokenizer.from_pretrained(folder + "/decoder")
result["plain_tokenizer"] = [type(plain).__name__, plain(texts)["input_ids"] == tokenizer(texts)["input_ids"]]
config = AutoConfig.from_pretrained(folder + "/decoder", trust_remote_code=True)
result["classes"] = [type(encoder).__module__ + "." + type(encoder).__name__,
                     type(decoder).__module__ + "." + type(decoder).__name__, type(config).__name__,
                     type(tokenizer).__name__]
result["special_ids"] = tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "eng_Latn", "fra_Latn"])
result["config_ids"] = [config.bos_token_id, config.pad_token_id, config.eos_token_id, config.decoder_start_token_id]
result["source_ids"] = tokenizer(texts)["input_ids"]
embeddings = encoder.encode(texts, lang="eng_Latn")
result["embeddings"] = embeddings.tolist()
prompt = torch.tensor([[2, result["special_ids"][5]]] * len(texts))
result["logits"] = decoder(sentence_embeddings=embeddings, decoder_input_ids=prompt).logits.tolist()
result["greedy"] = decoder.decode(embeddings, lang="fra_Latn", num_beams=1, max_length=8, return_token_ids=True)
result["beam"] = decoder.decode(embeddings, lang="eng_Latn", num_beams=2, max_length=8, return_token_ids=True)
result["generate"] = decoder.generate(sentence_embeddings=embeddings, decoder_input_ids=prompt, max_length=6,
                                      num_beams=2, do_sample=False).tolist()
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny random SONAR encoder/decoder in fairseq2 layout, converted with a tokenizer into folders."""
    work = tmp_path_factory.mktemp("remote_sonar")
    spm = train_tiny_spm(work / "spm.model", vocab_size=100)
    torch.manual_seed(0)
    paths = {}
    for kind in ("encoder", "decoder"):
        state = make_fs2_sonar_state_dict(kind, vocab=310, dim=16, layers=2, ffn=32)
        state = {k: v * 0.3 for k, v in state.items()}  # keep activations tame in the random model
        if kind == "decoder":
            state["final_proj.weight"] = state["decoder_frontend.embed.weight"]
        paths[kind] = work / f"{kind}.pt"
        torch.save({"model": state}, paths[kind])
    folder = work / "sonar"
    convert_sonar(folder, paths["encoder"], paths["decoder"], spm, num_heads=4)
    return folder


def run_without_package(code: str, cwd: Path) -> dict:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(cwd),
        "HF_HOME": str(cwd / "hf"),  # remote code is copied into a fresh modules cache here
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": "",
        "TOKENIZERS_PARALLELISM": "false",
    }
    result = subprocess.run(
        [sys.executable, "-c", HIDE_PACKAGE + code],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    # (transformers' "trust remote code? [y/N]" prompt, answered by EOF, may precede the marker on its line)
    lines = [line.split("RESULT ", 1)[1] for line in result.stdout.splitlines() if "RESULT " in line]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(lines[-1])


def test_folders_carry_code_auto_map_and_hf_token_order(converted):
    for kind in ("encoder", "decoder"):
        for name in FILES:
            assert (converted / kind / name).exists(), (kind, name)
        config = json.loads((converted / kind / "config.json").read_text())
        assert config["auto_map"] == AUTO_MAP[kind]
        assert config["model_type"] == f"sonar_text_{kind}"
        assert (config["bos_token_id"], config["pad_token_id"], config["eos_token_id"]) == (0, 1, 2)


def test_trust_remote_code_without_the_package_matches_the_package(converted, tmp_path):
    remote = run_without_package(CHILD.format(folder=str(converted), texts=TEXTS), tmp_path)

    # 1. it really ran the folder's copy of the code, and refused to without trust_remote_code
    assert "trust_remote_code" in remote["without_trust"]
    assert all(name.startswith("transformers_modules.") for name in remote["classes"][:2]), remote["classes"]
    assert remote["classes"][0].endswith(".SonarTextEncoder") and remote["classes"][1].endswith(".SonarTextDecoder")
    assert remote["classes"][2:] == ["SonarTextDecoderConfig", "NllbTokenizer"]
    assert remote["plain_tokenizer"] == ["NllbTokenizer", True]

    # 2. HF NLLB token order in tokenizer and config
    assert remote["special_ids"][:4] == [0, 1, 2, 3]
    assert remote["config_ids"] == [0, 1, 2, 2]

    # 3. the same numbers and texts as the installed package on the same folders
    encoder = SonarTextEncoder.from_pretrained(converted / "encoder").eval()
    decoder = SonarTextDecoder.from_pretrained(converted / "decoder").eval()
    assert type(encoder).__module__.startswith("sonar_llm_hf")
    tokenizer = encoder.tokenizer
    specials = ["<s>", "<pad>", "</s>", "<unk>", "eng_Latn", "fra_Latn"]
    assert remote["special_ids"] == tokenizer.convert_tokens_to_ids(specials)
    assert remote["source_ids"] == tokenizer(TEXTS)["input_ids"]
    with torch.no_grad():
        embeddings = encoder.encode(TEXTS, lang="eng_Latn")
        torch.testing.assert_close(torch.tensor(remote["embeddings"]), embeddings, rtol=0, atol=1e-6)
        prompt = torch.tensor([[2, remote["special_ids"][5]]] * len(TEXTS))
        logits = decoder(sentence_embeddings=embeddings, decoder_input_ids=prompt).logits
        torch.testing.assert_close(torch.tensor(remote["logits"]), logits, rtol=0, atol=1e-5)
        greedy = decoder.decode(embeddings, lang="fra_Latn", num_beams=1, max_length=8, return_token_ids=True)
        beam = decoder.decode(embeddings, lang="eng_Latn", num_beams=2, max_length=8, return_token_ids=True)
        generated = decoder.generate(sentence_embeddings=embeddings, decoder_input_ids=prompt, max_length=6,
                                     num_beams=2, do_sample=False)  # fmt: skip
    assert [list(x) for x in remote["greedy"]] == [list(x) for x in greedy]
    assert [list(x) for x in remote["beam"]] == [list(x) for x in beam]
    assert remote["generate"] == generated.tolist()
