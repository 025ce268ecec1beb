"""Convert every released SONAR-LLM original found in a folder (CHECKPOINTS.md says where each one lives).

    python conversion/convert_all.py ORIGINALS_DIR --sonar sonar --output-root converted [--dtype bfloat16] \
        [--push-to-hub-org ORG [--private]] [--dry-run]

Recognised under ORIGINALS_DIR (at any depth):
- Hub-layout folders: config.json with `llama_config` beside pytorch_model.bin (e.g. `hf download
  raxtemur/sonar-llm-900m --local-dir originals/sonar-llm-900m`); their own config is used;
- training checkpoints (*.pt, *.pth): with a reference JSON (`SonarLLM_*.json`, holding `llama_config`) in the same
  folder, that config is used; otherwise the size named in the file or folder name (100M, 300M, 600M, 900M, 1.3B)
  picks the preset, e.g. `originals/900M/checkpoint_step_16480.pt` or `originals/sonar-llm-900m.pt`.
Each result goes to OUTPUT_ROOT/sonar-llm-<size>; originals that would share a name get a suffix (`-step16480`,
`-hub`) instead of overwriting each other. Anything that cannot be converted is reported and the others still run
(a checkpoint whose own SONAR decoder differs from --sonar's is one: choose with --keep-checkpoint-decoder or
--use-sonar-decoder, as for convert_sonar_llm_to_hf.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling converter, also when imported from elsewhere
from convert_sonar_llm_to_hf import convert  # noqa: E402
from publish import PublishError  # noqa: E402

from sonar_llm_hf.conversion import ConversionError  # noqa: E402

SIZE = re.compile(r"(?<![0-9.])(100m|300m|600m|900m|1\.3b)(?![0-9])", re.IGNORECASE)
STEP = re.compile(r"step_?(\d+)", re.IGNORECASE)
# Data files of the reference pipeline that are .pt but not checkpoints.
NOT_CHECKPOINTS = re.compile(r"sonar_eos_embedding|_bucket_\d+|_val\.pt$|sonar_embeddings", re.IGNORECASE)


def _reads_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def find_originals(root: Path) -> tuple[list[dict], list[str]]:
    """-> (originals to convert: {source, config, preset, name}, skipped paths with the reason)."""
    found, skipped = [], []
    # 1. Hub-layout folders
    hub_folders = set()
    for config in sorted(root.rglob("config.json")):
        folder = config.parent
        settings = _reads_json(config)
        if "llama_config" not in settings:
            continue  # converted folders, SONAR folders, anything else
        if not (folder / "pytorch_model.bin").is_file():
            skipped.append(f"{folder}: config.json but no pytorch_model.bin")
            continue
        hub_folders.add(folder)
        size = SIZE.search(str(folder.relative_to(root)))
        base = f"sonar-llm-{size.group(1).lower()}" if size else f"sonar-llm-{folder.name.lower()}"
        found.append({"source": folder, "config": None, "preset": None, "base": base, "suffix": "hub"})
    # 2. training checkpoints
    for checkpoint in sorted(p for p in root.rglob("*") if p.suffix in (".pt", ".pth") and p.is_file()):
        relative = str(checkpoint.relative_to(root))
        if NOT_CHECKPOINTS.search(checkpoint.name) or any(f in checkpoint.parents for f in hub_folders):
            continue
        configs = [p for p in sorted(checkpoint.parent.glob("*.json")) if "llama_config" in _reads_json(p)]
        if len(configs) > 1:
            skipped.append(f"{checkpoint}: several reference configs beside it ({', '.join(p.name for p in configs)})")
            continue
        config = configs[0] if configs else None
        size = SIZE.search(relative) or (SIZE.search(config.name) if config else None)
        if config is None and size is None:
            skipped.append(f"{checkpoint}: no SonarLLM_*.json beside it and no size (100M ... 1.3B) in its path")
            continue
        label = size.group(1).lower() if size else re.sub(r"(?i)^sonarllm_", "", config.stem).lower()
        step = STEP.search(checkpoint.name)
        found.append({"source": checkpoint, "config": config, "preset": None if config else size.group(1).upper(),
                      "base": f"sonar-llm-{label}",
                      "suffix": f"step{step.group(1)}" if step else checkpoint.stem.lower()})  # fmt: skip
    # 3. unique output names: a suffix only where two originals would share one
    counts = {}
    for item in found:
        counts[item["base"]] = counts.get(item["base"], 0) + 1
    names = set()
    for item in found:
        name = item["base"] if counts[item["base"]] == 1 else f"{item['base']}-{item['suffix']}"
        while name in names:
            name += "-1"
        names.add(name)
        item["name"] = name
    return found, skipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("originals", type=Path)
    parser.add_argument("--sonar", required=True, help="folder made by convert_sonar_to_hf.py")
    parser.add_argument("--output-root", required=True, type=Path)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    parser.add_argument("--push-to-hub-org", metavar="ORG", help="publish each folder as ORG/<its name>")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="list what would be converted, convert nothing")
    decoder = parser.add_mutually_exclusive_group()
    decoder.add_argument(
        "--keep-checkpoint-decoder",
        action="store_true",
        help="convert each training checkpoint's own SONAR decoder (see convert_sonar_llm_to_hf.py)",
    )
    decoder.add_argument(
        "--use-sonar-decoder",
        action="store_true",
        help="use --sonar's decoder even where a checkpoint's own copy differs",
    )
    args = parser.parse_args(argv)
    if not args.originals.is_dir():
        print(f"convert_all: error: {args.originals} is not a folder", file=sys.stderr)
        return 2
    originals, skipped = find_originals(args.originals)
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    if not originals:
        print(f"convert_all: error: no recognised SONAR-LLM original under {args.originals}", file=sys.stderr)
        return 2
    failures = 0
    for item in originals:
        output = args.output_root / item["name"]
        how = (f"--config {item['config']}" if item["config"] else f"--preset {item['preset']}" if item["preset"]
               else "its config.json")  # fmt: skip
        if args.dry_run:
            print(f"{item['source']} -> {output} ({how})")
            continue
        repo = f"{args.push_to_hub_org}/{item['name']}" if args.push_to_hub_org else None
        try:
            report = convert(item["source"], args.sonar, output, config=item["config"], preset=item["preset"],
                             dtype=args.dtype, push_to_hub=repo, private=args.private,
                             decoder="checkpoint" if args.keep_checkpoint_decoder else "sonar"
                             if args.use_sonar_decoder else "check")  # fmt: skip
        except (ConversionError, PublishError) as error:
            failures += 1
            print(f"{item['source']}: error: {error}", file=sys.stderr)
            continue
        print(f"{item['source']} -> {report['output']} ({how}; preset {report['preset'] or 'none'}; "
              f"decoder {report['decoder_copy']}){' -> ' + repo if repo else ''}")  # fmt: skip
    if failures:
        print(f"convert_all: {failures} of {len(originals)} original(s) failed", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
