"""Assemble the folder to upload as a Hugging Face Space: app.py, README.md, requirements.txt and the package source.

    python examples/space/build_space.py space_build
    hf upload OWNER/SPACE space_build . --repo-type space

A Space's build installs requirements.txt before it copies the Space's other files in, so a requirements line cannot
point at a file uploaded with the app (a wheel), and sonar-llm-hf is not on PyPI. So the package travels as source
beside app.py (Python imports it from the app's folder, demo model included) and requirements.txt names only its
dependencies, which PyPI has. tests/test_publish.py starts the built folder's app in a fresh virtualenv.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parents[1] / "sonar_llm_hf"
SPACE_FILES = ("app.py", "README.md", "requirements.txt")


def build_space(output) -> Path:
    """Write the Space folder to `output` and return it. `output` may be new, empty or an earlier build (its
    manifest lists exactly its files); anything else in it is refused by name and left untouched."""
    sys.path.insert(0, str(PACKAGE.parent))  # the package beside this script, installed or not
    from sonar_llm_hf.conversion.output import atomic_output_dir

    output = Path(output)
    with atomic_output_dir(output, kind="space") as staging:
        for name in SPACE_FILES:
            shutil.copy2(HERE / name, staging / name)
        shutil.copytree(PACKAGE, staging / "sonar_llm_hf", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    from sonar_llm_hf.conversion.checkpoints import ConversionError

    try:
        folder = build_space(args.output)
    except (ConversionError, OSError) as error:  # a file in the way, a read-only folder, a full disk
        print(f"build_space: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {folder}; upload it with: hf upload OWNER/SPACE {folder} . --repo-type space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
