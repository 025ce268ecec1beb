"""Convert a released SONAR-LLM checkpoint into a transformers folder (and optionally publish it).

    python conversion/convert_sonar_llm_to_hf.py --checkpoint checkpoint_step_16480.pt --sonar sonar \
        --preset 900M --output sonar-llm-900m [--dtype bfloat16] \
        [--push-to-hub org/sonar-llm-900m [--private] [--revision R] [--commit-message M]]

CKPT is a reference training checkpoint (.pt with `model_state_dict`, optimizer, scheduler and RNG states) or a
Hub-layout folder (config.json with `llama_config`/`embed_dim`/`add_begin`, and pytorch_model.bin). SONAR_DIR is the
output of convert_sonar_to_hf.py. A checkpoint's tensors do not record attention heads or head_dim, so the backbone
config comes from --config (the reference repo's SonarLLM_*.json), --preset, the folder's config.json, or the
shapes plus --num-attention-heads; tensor shapes are checked against it and an error says what the weights show and
the nearest preset. Weights are read with weights_only=True: a pickle that carries code is refused.

The SONAR decoder saved inside a training checkpoint must equal SONAR_DIR's, else the conversion stops and names the
largest difference: --keep-checkpoint-decoder converts the checkpoint's own decoder (a model trained with its
decoder unfrozen), --use-sonar-decoder takes SONAR_DIR's anyway. `add_begin` (prepend "Begin of text.") is read from
the config where recorded; --add-begin/--no-add-begin states it (a contradiction is refused); the default is no.

The folder is written atomically and verified before the command reports success: the converted model's predicted
embeddings equal, within 1e-5, those of an independent build of the reference (transformers' LlamaForCausalLM from
the reference's llama_config and two nn.Linear projectors, loaded from the checkpoint's own keys) on a few documents,
and the reloaded folder reproduces the converted model. An existing output folder is replaced only if it holds an
earlier conversion of the same checkpoint to the same architecture and nothing else.

From Python: `convert(checkpoint, sonar_dir, output, preset="900M")` returns the report printed here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from sonar_llm_hf import SONAR_LLM_PRESETS
from sonar_llm_hf.conversion import ConversionError
from sonar_llm_hf.conversion.output import check_replaceable
from sonar_llm_hf.conversion.sonar_llm import convert_sonar_llm, read_source, resolve_add_begin, resolve_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling publish.py, also when imported from elsewhere
from publish import PublishError, publish_folder  # noqa: E402

# Settings that tensors cannot show (heads, head_dim, RoPE) or that must agree across config sources.
BACKBONE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "head_dim",
                   "num_key_value_heads", "hidden_act", "rms_norm_eps", "rope_parameters", "attention_bias",
                   "mlp_bias")  # fmt: skip
CARD_SOURCE = re.compile(r"conversion of `([^`]+)`")  # written by sonar_llm_hf.conversion.model_card


def _backbone_fields(config) -> dict:
    return {name: getattr(config, name, None) for name in BACKBONE_FIELDS}


def expected_backbone(
    checkpoint,
    config=None,
    preset: str | None = None,
    add_begin: bool | None = None,
    state: dict | None = None,
    num_attention_heads: int | None = None,
) -> tuple[dict, int, str]:
    """-> (backbone settings, embed_dim, where they came from), read before any weights are loaded (except when
    only the checkpoint's shapes, `state`, and the heads can tell).

    A Hub-layout folder's own config.json and an explicit --config/--preset must agree on everything the tensors
    cannot show (heads, head_dim, RoPE): a disagreement would silently build another model. So must --add-begin.
    """
    path = Path(checkpoint)
    folder_config = None
    if path.is_dir() and (path / "config.json").is_file():
        try:
            folder_config = json.loads((path / "config.json").read_text())
        except ValueError as error:
            raise ConversionError(f"{path / 'config.json'} is not JSON: {error}") from error
        if not isinstance(folder_config, dict) or "llama_config" not in folder_config:
            raise ConversionError(f"{path / 'config.json'} has no `llama_config`: not a SONAR-LLM Hub-layout folder.")
    resolved = resolve_backbone(config, preset, folder_config, state=state, num_attention_heads=num_attention_heads)
    backbone, embed_dim, source = resolved.config, resolved.embed_dim, resolved.source
    chosen = _backbone_fields(backbone)
    if folder_config is not None and (config is not None or preset is not None):
        own_resolved = resolve_backbone(hub_config=folder_config)
        own_backbone, own_embed = own_resolved.config, own_resolved.embed_dim
        own = _backbone_fields(own_backbone)
        differences = [f"{k}: folder {own[k]} vs {source} {chosen[k]}" for k in BACKBONE_FIELDS if own[k] != chosen[k]]
        if own_embed != embed_dim:
            differences.append(f"embed_dim: folder {own_embed} vs {source} {embed_dim}")
        if differences:
            raise ConversionError(
                f"{source} disagrees with the config.json of {path}: {'; '.join(differences)}. "
                "Drop the option to use the folder's own config."
            )
    resolve_add_begin(add_begin, resolved)  # a flag that contradicts the recorded value is refused here
    return chosen, embed_dim, source


def check_output(output, checkpoint, backbone: dict, embed_dim: int) -> None:
    """Refuse an output folder holding anything but an earlier conversion of this checkpoint to this architecture."""
    output = Path(output)
    if not output.exists():
        return
    if not output.is_dir():
        raise ConversionError(f"Output {output} exists and is not a folder.")
    entries = sorted(p.name for p in output.iterdir())
    if not entries:
        return
    config_file = output / "config.json"
    try:
        config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    except ValueError:
        config = {}
    if config.get("model_type") != "sonar_llm":
        raise ConversionError(
            f"Output folder {output} already holds other files (a different model?): {', '.join(entries[:6])}. "
            "Choose an empty or new folder."
        )
    existing = {k: config.get("llama_config", {}).get(k) for k in BACKBONE_FIELDS[:6]}
    wanted = {k: backbone[k] for k in BACKBONE_FIELDS[:6]}
    if existing != wanted or config.get("embed_dim") != embed_dim:

        def shown(d):
            return "hidden {hidden_size}, {num_hidden_layers} layers, {num_attention_heads}x{head_dim}".format(**d)

        raise ConversionError(
            f"Output folder {output} holds a different SONAR-LLM ({shown(existing)}) than this conversion "
            f"({shown(wanted)}). Choose an empty or new folder."
        )
    readme = output / "README.md"
    previous = CARD_SOURCE.search(readme.read_text()) if readme.is_file() else None
    if previous is None or previous.group(1) != Path(checkpoint).name:
        raise ConversionError(
            f"Output folder {output} holds a SONAR-LLM converted from "
            f"{previous.group(1) if previous else 'an unknown source'}, not from {Path(checkpoint).name}. "
            "Choose an empty or new folder."
        )
    check_replaceable(output)  # exactly the files that conversion wrote (its manifest), or nothing is touched


def _use_umask_permissions(folder: Path) -> None:
    """The staging folder is created 0700 and safetensors writes 0600: give the result the user's usual modes."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def convert(
    checkpoint,
    sonar_dir,
    output,
    config=None,
    preset: str | None = None,
    dtype: str | None = None,
    push_to_hub: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    api=None,
    add_begin: bool | None = None,
    decoder: str = "check",
    num_attention_heads: int | None = None,
) -> dict:
    """Convert, verify and write one checkpoint (see the module docstring); publish to `push_to_hub` if given.

    Returns the report: output, config_source, preset (the preset the backbone matches, or None),
    dropped_parameters, decoder_copy, trainable_parameters, total_parameters, and commit when published.
    Raises `ConversionError` (nothing written) or `PublishError` (folder written, upload failed).
    """
    # 1. checks before the weights are read: config sources agree, the output may be (re)written. A training
    #    checkpoint without --config/--preset is read first: only its shapes (and the heads) say what it holds.
    source = None
    if config is None and preset is None and not Path(checkpoint).is_dir():
        source = read_source(checkpoint)
    backbone, embed_dim, _ = expected_backbone(checkpoint, config=config, preset=preset, add_begin=add_begin,
                                               state=source and source[0],
                                               num_attention_heads=num_attention_heads)  # fmt: skip
    check_output(output, checkpoint, backbone, embed_dim)
    # 2. convert, write atomically, verify against an independent build of the reference and by reloading
    report = convert_sonar_llm(checkpoint, sonar_dir, output, config_json=config, preset=preset, dtype=dtype,
                               repo_id=push_to_hub, add_begin=add_begin, decoder=decoder,
                               num_attention_heads=num_attention_heads, source=source)  # fmt: skip
    _use_umask_permissions(Path(output))
    # 3. publish
    if push_to_hub:
        report["commit"] = publish_folder(output, push_to_hub, private=private, revision=revision,
                                          commit_message=commit_message, api=api)  # fmt: skip
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="training checkpoint (.pt) or Hub-layout folder")
    parser.add_argument("--sonar", required=True, help="folder made by convert_sonar_to_hf.py (encoder/, decoder/)")
    parser.add_argument("--output", required=True)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="the reference repo's JSON: {'llama_config': {...}, 'embed_dim': 1024}")
    source.add_argument("--preset", choices=list(SONAR_LLM_PRESETS))
    source.add_argument(
        "--num-attention-heads",
        type=int,
        metavar="N",
        help="for a checkpoint of no released size: the heads (the weights show everything else)",
    )
    decoder = parser.add_mutually_exclusive_group()
    decoder.add_argument(
        "--keep-checkpoint-decoder",
        action="store_true",
        help="convert the SONAR decoder saved in the checkpoint (e.g. trained with the backbone)",
    )
    decoder.add_argument(
        "--use-sonar-decoder",
        action="store_true",
        help="use --sonar's decoder even though the checkpoint's own copy differs",
    )
    parser.add_argument(
        "--add-begin",
        action=argparse.BooleanOptionalAction,
        default=None,
        help='the model was (not) trained with "Begin of text." first; default: what the config records, else no',
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default=None,
        help="cast the weights after verification (default: keep the checkpoint's fp32)",
    )
    parser.add_argument("--push-to-hub", metavar="REPO", help="publish the folder to this Hub repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    parser.add_argument("--revision", help="Hub branch to upload to (created from main if missing)")
    parser.add_argument("--commit-message")
    args = parser.parse_args(argv)
    if (args.private or args.revision or args.commit_message) and not args.push_to_hub:
        parser.error("--private, --revision and --commit-message need --push-to-hub")
    try:
        report = convert(args.checkpoint, args.sonar, args.output, config=args.config, preset=args.preset,
                         dtype=args.dtype, push_to_hub=args.push_to_hub, private=args.private,
                         revision=args.revision, commit_message=args.commit_message, add_begin=args.add_begin,
                         decoder="checkpoint" if args.keep_checkpoint_decoder else "sonar" if args.use_sonar_decoder
                         else "check", num_attention_heads=args.num_attention_heads)  # fmt: skip
    except ConversionError as error:
        print(f"convert_sonar_llm_to_hf: error: {error}", file=sys.stderr)
        return 2
    except PublishError as error:
        print(f"convert_sonar_llm_to_hf: error: {error}", file=sys.stderr)
        return 3
    print(f"wrote {report['output']} (predictions equal an independent build of the reference's within "
          f"{report['verification']['max_abs_diff']:.2g} on {report['verification']['documents']} documents, "
          "also after reloading)")  # fmt: skip
    print(f"backbone config from {report['config_source']}; matches preset: {report['preset'] or 'none'}")
    print(f"parameters: {report['trainable_parameters']:,} backbone and projectors, {report['total_parameters']:,} "
          "with SONAR")  # fmt: skip
    print(f"dropped {report['dropped_parameters']:,} parameters of the untrained Llama token embedding/head")
    print(f"SONAR decoder: {report['decoder_copy']}; the checkpoint bundled it as: {report['decoder_layout']}")
    print(f"add_begin: {str(report['add_begin']).lower()} ({report['add_begin_source']})")
    if "commit" in report:
        print(f"published: {getattr(report['commit'], 'commit_url', report['commit'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
