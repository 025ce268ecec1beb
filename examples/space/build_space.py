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
    """Write the Space folder to `output` (new or empty) and return it."""
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise SystemExit(f"build_space: {output} is not empty; choose a new folder.")
    output.mkdir(parents=True, exist_ok=True)
    for name in SPACE_FILES:
        shutil.copy2(HERE / name, output / name)
    shutil.copytree(PACKAGE, output / "sonar_llm_hf", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    args = parser.parse_args(argv)
    folder = build_space(args.output)
    print(f"wrote {folder}; upload it with: hf upload OWNER/SPACE {folder} . --repo-type space")
    return 0


if __name__ == "__main__":
    sys.exit(main())
