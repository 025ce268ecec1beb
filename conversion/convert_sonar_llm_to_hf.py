"""Convert a released SONAR-LLM checkpoint into a transformers folder (and optionally publish it).

    python conversion/convert_sonar_llm_to_hf.py --checkpoint checkpoint_step_16480.pt --sonar sonar \
        --config SonarLLM_900M.json --output sonar-llm-900m [--dtype bfloat16] [--push-to-hub org/sonar-llm-900m]

CKPT is a reference training checkpoint (.pt with `model_state_dict`) or a Hub-layout folder (config.json +
pytorch_model.bin). SONAR_DIR is the output of convert_sonar_to_hf.py. The backbone config comes from --config
(the reference repo's JSON), --preset, or the folder's config.json; tensor shapes are checked against it.
"""

import argparse
import sys

from sonar_llm_hf.configuration_sonar_llm import SONAR_LLM_PRESETS
from sonar_llm_hf.conversion_sonar_llm import convert_sonar_llm
from sonar_llm_hf.conversion_utils import ConversionError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--sonar", required=True, help="folder made by convert_sonar_to_hf.py")
    parser.add_argument("--output", required=True)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="reference JSON: {'llama_config': {...}, 'embed_dim': 1024}")
    source.add_argument("--preset", choices=list(SONAR_LLM_PRESETS))
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="cast the weights (default: keep fp32)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="publish the folder to this Hub repository")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", help="branch to upload to")
    parser.add_argument("--commit-message")
    args = parser.parse_args(argv)
    try:
        report = convert_sonar_llm(
            args.checkpoint, args.sonar, args.output, config_json=args.config, preset=args.preset, dtype=args.dtype,
            repo_id=args.push_to_hub, push_to_hub=bool(args.push_to_hub), private=args.private,
            revision=args.revision, commit_message=args.commit_message,
        )  # fmt: skip
    except ConversionError as error:
        print(f"convert_sonar_llm_to_hf: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {report['output']} (verified against the reference wrapper and by reloading)")
    print(f"backbone config from {report['config_source']}; matches preset: {report['preset'] or 'none'}")
    print(f"dropped {report['dropped_parameters']:,} parameters of the untrained Llama token embedding/head")
    print(f"bundled SONAR decoder: {report['decoder_copy']}")
    if "commit" in report:
        print(f"published: {report['commit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
