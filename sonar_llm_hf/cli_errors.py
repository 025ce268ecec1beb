"""How a `sonar-llm` command fails: one line on stderr and a non-zero exit status, never a traceback.

`run_command(func, args)` runs one subcommand; every subcommand of `cli.py` goes through it, so a new one gets the
same handling without writing any. Before the command runs, a `--model` argument is checked (a folder that does not
exist, a damaged or Git LFS pointer weights file); afterwards each exception becomes one line:

- bad input (`ValueError`, `TypeError`, `OSError`, `LookupError`, a damaged file, a dataset that cannot be read):
  its message, exit status 2 (argparse's usage errors have 2 too);
- a missing optional package: its name and the `pip install` line of the extra that has it, exit status 2;
- standard output closed by its reader (`sonar-llm generate ... | head -1`): exit status 141, what a shell reports
  for a writer stopped by SIGPIPE;
- Ctrl-C: exit status 130;
- anything else is a bug: its type and message, exit status 1.

`SONAR_LLM_TRACEBACK=1` prints the traceback as well (for bug reports).
"""

from __future__ import annotations

import os
import select
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

EXIT_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE
TRACEBACK_VARIABLE = "SONAR_LLM_TRACEBACK"

# Importable module -> the extra of pyproject.toml that installs it.
OPTIONAL_EXTRAS = {"nltk": "eval", "rouge_score": "eval", "gradio": "demo", "pyarrow": "embed",
                   "sentence_transformers": "st", "mteb": "mteb", "selenium": "dev", "pytest": "dev"}  # fmt: skip
# Exceptions of other libraries that mean bad input (matched by name: their modules need not be importable).
INPUT_ERROR_NAMES = {"SafetensorError", "DatasetGenerationError", "HfHubHTTPError"}


class CommandError(Exception):
    """A failure whose message is already the line to print."""


def extra_install_line(extra: str) -> str:
    return f'pip install -e ".[{extra}]" (in the sonar-llm-hf clone)'


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _is_input_error(error: BaseException) -> bool:
    known = (CommandError, ValueError, TypeError, OSError, LookupError, ImportError)
    return isinstance(error, known) or any(t.__name__ in INPUT_ERROR_NAMES for t in type(error).__mro__)


def describe(error: BaseException) -> tuple[str, int]:
    """The line to print for `error`, and the exit status."""
    if isinstance(error, CommandError):
        return _one_line(error), EXIT_ERROR
    message = _one_line(error) or type(error).__name__
    if isinstance(error, ImportError) and "pip install" not in message:
        name = (error.name or "").split(".")[0]
        if name in OPTIONAL_EXTRAS:
            line = f"the optional package {name!r} is not installed ({message})"
            return f"{line}: {extra_install_line(OPTIONAL_EXTRAS[name])}", EXIT_ERROR
        if name:
            return f"{message}: this command needs the package that provides {name!r} (pip install it)", EXIT_ERROR
    # A wrapper's message ("An error occurred while generating the dataset") says less than its cause.
    cause = error.__cause__
    cause_message = _one_line(cause) if cause is not None else ""
    if cause_message and cause_message not in message:
        message = f"{message} ({type(cause).__name__}: {cause_message})"
    if isinstance(error, UnicodeDecodeError):
        message = f"a file is not valid UTF-8: {message}"
    if any(t.__name__ == "SafetensorError" for t in type(error).__mro__):
        message = f"a .safetensors weights file is damaged or truncated: {message}"
    if _is_input_error(error):
        return message, EXIT_ERROR
    hint = f"set {TRACEBACK_VARIABLE}=1 to see where" if not os.environ.get(TRACEBACK_VARIABLE) else "traceback above"
    return f"unexpected {type(error).__name__}: {message} (a bug: {hint})", EXIT_BUG


def _looks_like_a_path(name: str) -> bool:
    """True for names that cannot be a Hub repo id (`org/name` or `name`), so can only mean a local folder."""
    if name.startswith((".", "~")) or os.path.isabs(name) or "\\" in name or name.endswith("/"):
        return True
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(name)
    except Exception:  # noqa: BLE001 (HFValidationError: not a repo id)
        return True
    return False


def _hub_offline() -> bool:
    variables = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in variables)


def check_weight_files(folder: Path) -> None:
    """Refuse a folder whose `.safetensors` files are Git LFS pointers or cannot be opened (truncated, damaged)."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        with open(path, "rb") as file:
            head = file.read(64)
        if head.startswith(b"version https://git-lfs"):
            raise CommandError(f"{path} is a Git LFS pointer, not the weights: run `git lfs pull` in the clone "
                               "(or download the model with huggingface_hub).")  # fmt: skip
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 (SafetensorError, OSError: the file is unusable either way)
            raise CommandError(f"the weights file {path} is damaged ({_one_line(error)}): it is truncated or not "
                               "a safetensors file; copy or download it again.") from error  # fmt: skip


def check_model_source(model: str | os.PathLike | None) -> None:
    """Fail early, with what is wrong, for a `--model` that cannot load: a missing folder (not "invalid repo id"),
    a file instead of a folder, damaged weights, or a Hub id while the Hub is off."""
    if model is None or str(model) == "":
        return
    name = str(model)
    path = Path(name).expanduser()
    if path.is_dir():
        check_weight_files(path)
        return
    if path.exists():
        raise CommandError(f"--model {name} is a file; give the model's folder (the one with config.json).")
    if _looks_like_a_path(name):
        where = "" if str(path.absolute()) == name else f" ({path.absolute()})"
        raise CommandError(f"the model folder {name} does not exist{where}.")
    if _hub_offline():
        raise CommandError(f"{name!r} is not a folder here ({path.absolute()} does not exist), and the Hub is off "
                           "(HF_HUB_OFFLINE), so it cannot be loaded as a Hub repo id either.")  # fmt: skip


def _stdout_closed() -> bool:
    """Whether the reader of our standard output went away (a pipe's write end then polls as an error)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll on this platform, or stdout is not a file
        return True


def _detach_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush does not raise a second BrokenPipeError."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


def _say(prog: str, line: str) -> None:
    try:
        print(f"{prog}: {line}", file=sys.stderr, flush=True)
    except (OSError, ValueError):  # stderr closed too: the exit status is all that is left
        pass


def run_command(func: Callable[..., int], args, prog: str = "sonar-llm") -> int:
    """Run `func(args)` (a subcommand) and turn any failure into one line on stderr and an exit status."""
    try:
        check_model_source(getattr(args, "model", None))
        return func(args)
    except KeyboardInterrupt:
        _say(prog, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError as error:
        if _stdout_closed():
            _detach_stdout()
            _say(prog, "stopped: the reader of its output went away (for example `| head`)")
            return EXIT_STDOUT_CLOSED
        return _report(prog, error)
    except Exception as error:  # noqa: BLE001 (every failure becomes one line; the traceback on request)
        return _report(prog, error)


def _report(prog: str, error: BaseException) -> int:
    if os.environ.get(TRACEBACK_VARIABLE):
        traceback.print_exception(error, file=sys.stderr)
    line, status = describe(error)
    _say(prog, f"error: {line}")
    return status


__all__ = ["CommandError", "check_model_source", "check_weight_files", "describe", "run_command"]
