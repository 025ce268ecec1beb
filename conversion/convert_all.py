"""Convert every released SONAR-LLM original found in a folder (see CHECKPOINTS.md for where they live).

    python conversion/convert_all.py ORIGINALS_DIR --sonar sonar --output-root converted

Recognised: Hub-layout folders (config.json + pytorch_model.bin, e.g. raxtemur/sonar-llm-900m downloaded with
`hf download`), and reference training checkpoints (*.pt) whose file or folder name names a size (100M, 300M,
600M, 900M, 1.3B), converted with that preset. Each result goes to OUTPUT_ROOT/sonar-llm-<size>.
"""

import argparse
import re
import sys
from pathlib import Path

from sonar_llm_hf.conversion_sonar_llm import convert_sonar_llm
from sonar_llm_hf.conversion_utils import ConversionError

SIZE = re.compile(r"(100m|300m|600m|900m|1\.3b)", re.IGNORECASE)


def find_originals(root: Path) -> list[tuple[Path, str | None, str]]:
    """-> (source, preset or None for folders with their own config, output name)."""
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / "config.json").exists()):
        size = SIZE.search(folder.name)
        found.append((folder, None, f"sonar-llm-{size.group(1).lower() if size else folder.name}"))
    for checkpoint in sorted(root.rglob("*.pt")):
        size = SIZE.search(str(checkpoint.relative_to(root)))
        if size:
            found.append((checkpoint, size.group(1).upper(), f"sonar-llm-{size.group(1).lower()}"))
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("originals", type=Path)
    parser.add_argument("--sonar", required=True, help="folder made by convert_sonar_to_hf.py")
    parser.add_argument("--output-root", required=True, type=Path)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    args = parser.parse_args(argv)
    originals = find_originals(args.originals)
    if not originals:
        print(f"convert_all: no recognised SONAR-LLM original under {args.originals}", file=sys.stderr)
        return 2
    failures = 0
    for source, preset, name in originals:
        try:
            report = convert_sonar_llm(source, args.sonar, args.output_root / name, preset=preset, dtype=args.dtype)
            print(f"{source} -> {report['output']} (preset {report['preset'] or 'custom'})")
        except ConversionError as error:
            failures += 1
            print(f"{source}: error: {error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
