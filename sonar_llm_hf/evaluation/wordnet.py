"""WordNet for METEOR, offline: find it where NLTK looks, or build it from Debian's WordNet 3.0 packages.

The paper's METEOR (nltk `meteor_score`) matches synonyms through WordNet, which NLTK normally downloads from the
network. Debian's `wordnet-base` and `wordnet-sense-index` packages install the same WordNet 3.0 database under
/usr/share/wordnet; NLTK reads it as `<NLTK_DATA>/corpora/wordnet/` once the `lexnames` index is beside the data
files. Debian ships no `lexnames` file, but its 45 rows are the table of the lexnames(5WN) man page (in
`wordnet-base`), written out below. NLTK refuses corpus paths outside its data path, so the files are copied.

    apt-get install -y wordnet-base wordnet-sense-index
    python -m sonar_llm_hf.evaluation.wordnet --install          # into $NLTK_DATA (first entry) or ~/nltk_data
    python -m sonar_llm_hf.evaluation.wordnet                    # where is it? (exit status 1 if missing)

Without WordNet, `nlg_scores` raises `WordNetMissingError` with these instructions: a METEOR without synonyms is a
different number and is never reported under the same name.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")

# lexnames(5WN), WordNet 3.0: file number -> lexicographer file. The third column (syntactic category: 1 noun,
# 2 verb, 3 adjective, 4 adverb) follows from the name's prefix.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)  # fmt: skip
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

# What NLTK's WordNetCorpusReader opens (besides lexnames, which we write).
REQUIRED_FILES = (
    "cntlist.rev", "index.sense", "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)  # fmt: skip

INSTALL_HINT = (
    "METEOR needs WordNet 3.0 (synonym matching). Offline, on Debian/Ubuntu:\n"
    "    apt-get install -y wordnet-base wordnet-sense-index\n"
    "    python -m sonar_llm_hf.evaluation.wordnet --install\n"
    "(this writes <NLTK_DATA>/corpora/wordnet, using the first folder of $NLTK_DATA or ~/nltk_data). "
    "With network access, `python -m nltk.downloader wordnet` works too."
)


class WordNetMissingError(LookupError):
    """WordNet is not where NLTK looks; the message says how to install it."""


def lexnames_table() -> str:
    """The `lexnames` file: 45 lines `NN<TAB>name<TAB>category`."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def nltk_data_paths() -> list[str]:
    """NLTK's search path, with the folders of $NLTK_DATA first (also when it was set after nltk was imported)."""
    import nltk

    from_env = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    for path in reversed(from_env):
        if path not in nltk.data.path:
            nltk.data.path.insert(0, path)
    return list(nltk.data.path)


def find_wordnet() -> str:
    """The folder (or zip) NLTK loads WordNet from; `WordNetMissingError` with instructions if there is none."""
    import nltk

    nltk_data_paths()
    for resource in ("corpora/wordnet", "corpora/wordnet.zip/wordnet/"):
        try:
            return str(nltk.data.find(resource))
        except LookupError:
            continue
    searched = "\n".join(f"    - {p}" for p in nltk.data.path)
    raise WordNetMissingError(f"WordNet was not found in NLTK's data path:\n{searched}\n{INSTALL_HINT}")


def check_wordnet():
    """Find WordNet and load it: returns NLTK's `wordnet` reader, with synonyms (raises if it is missing/broken)."""
    location = find_wordnet()
    from nltk.corpus import wordnet

    try:
        if not wordnet.synsets("cat"):
            raise WordNetMissingError(f"WordNet at {location} has no synset for 'cat': it is incomplete.\n"
                                      f"{INSTALL_HINT}")  # fmt: skip
    except (LookupError, OSError, AssertionError, ValueError) as error:
        if isinstance(error, WordNetMissingError):
            raise
        raise WordNetMissingError(f"WordNet at {location} does not load ({error}).\n{INSTALL_HINT}") from error
    return wordnet


def default_target() -> Path:
    """The first folder of $NLTK_DATA, else ~/nltk_data (where `nltk.download` writes by default)."""
    from_env = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    return Path(from_env[0]) if from_env else Path.home() / "nltk_data"


def install_wordnet(target: str | os.PathLike | None = None, source: str | os.PathLike = DEBIAN_WORDNET) -> Path:
    """Copy Debian's WordNet 3.0 database into `<target>/corpora/wordnet/` and write `lexnames` there.

    Returns the corpus folder. Raises `FileNotFoundError` naming the packages when the source files are missing.
    """
    source = Path(source)
    missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source} lacks {', '.join(missing)}: install the Debian packages first:\n"
            "    apt-get install -y wordnet-base wordnet-sense-index"
        )
    corpus = Path(target if target is not None else default_target()) / "corpora" / "wordnet"
    corpus.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file():
            shutil.copyfile(path, corpus / path.name)
    (corpus / "lexnames").write_text(lexnames_table())
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonar_llm_hf.evaluation.wordnet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--install", action="store_true", help="build corpora/wordnet from Debian's WordNet files")
    parser.add_argument("--target", default=None, help="NLTK data folder (default: first of $NLTK_DATA, ~/nltk_data)")
    parser.add_argument("--source", default=str(DEBIAN_WORDNET), help="folder of the WordNet 3.0 database files")
    args = parser.parse_args(argv)
    if args.install:
        try:
            corpus = install_wordnet(args.target, args.source)
        except FileNotFoundError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"WordNet written to {corpus}")
        if args.target is not None and str(Path(args.target)) not in map(str, map(Path, nltk_data_paths())):
            print(f"note: {args.target} is not in NLTK's data path: set NLTK_DATA={args.target}", file=sys.stderr)
            return 0
    try:
        wordnet = check_wordnet()
    except WordNetMissingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"WordNet {wordnet.get_version()} found at {find_wordnet()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
