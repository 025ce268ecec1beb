"""`sonar-llm`: command-line entry point.

    sonar-llm generate "Once upon a time, there was a cat. The cat was hungry." [--model PATH_OR_REPO]
    sonar-llm evaluate --model M --dataset D [--split S] [--prefix short|long|both] [--limit N] --out DIR
    sonar-llm embed INPUT... --output DIR [--lang L | --lang-column C] [--model M] [--dtype D] [--max-tokens N]

Sentences are printed as soon as they are decoded. Without `--model` the offline demo model is used (see
`sonar_llm_hf.demo`): a miniature trained here to show the method, not a language model. On CPU in fp32, `generate`
packs SONAR's layer weights for oneDNN first (`sonar_llm_hf.speed`: exact, same memory, faster; `--kernels` chooses).
A failure prints one line on stderr and exits with a non-zero status, 2 for bad input (`cli_errors.py`;
SONAR_LLM_TRACEBACK=1 also prints the traceback).
"""

from __future__ import annotations

import argparse
import sys

from .cli_errors import run_command


def _generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModel

    from . import PrintSentenceStreamer
    from .demo import default_model_path
    from .speed import prepare_for_inference

    path = args.model or default_model_path(verbose=True)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=args.trust_remote_code)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    prepare_for_inference(model.to(device), kernels=args.kernels)
    prompts = args.prompt
    streamer = PrintSentenceStreamer(num_prompts=len(prompts))
    if not args.quiet:
        for i, prompt in enumerate(prompts):
            prefix = f"[{i}] " if len(prompts) > 1 else ""
            print(f"{prefix}Prompt: {prompt}\n{prefix}Continuation:", flush=True)
    options = dict(
        prompt_lang=args.lang,
        target_lang=args.target_lang,
        num_beams=args.num_beams,
        eos_threshold=args.eos_threshold,
        max_sentences=args.max_sentences,
        max_new_sentences=args.max_new_sentences,
        seed=args.seed,
        min_new_sentences=args.min_new_sentences,
        repetition_threshold=args.repetition_threshold,
        repetition_action=args.repetition_action,
        avoid_special_sentences=args.avoid_special_sentences,
        avoid_attempts=args.avoid_attempts,
        avoid_temperature=args.avoid_temperature,
        latent_temperature=args.latent_temperature,
        latent_top_p=args.latent_top_p,
    )
    if args.sample:  # plain sampling unless --num-beams asks for beam sampling
        num_beams = 1 if args.num_beams is None else args.num_beams
        options.update(do_sample=True, num_beams=num_beams, temperature=args.temperature, top_p=args.top_p)
    options = {k: v for k, v in options.items() if v is not None}
    if args.reference_loop:  # the saved controls give way to the reference's (None included); given flags still win
        from .models.generation_sonar_llm import CONTROL_DEFAULTS

        options = {**CONTROL_DEFAULTS, **options}
    model.generate(prompts, streamer=streamer, **options)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sonar-llm", description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="continue one or more texts sentence by sentence")
    gen.add_argument("prompt", nargs="+", help="text(s) to continue; each is split into sentences")
    gen.add_argument("--model", help="converted model folder or Hub repo id (default: the offline demo model)")
    gen.add_argument("--lang", default=None, help="prompt language, a SONAR code such as eng_Latn (default: model's)")
    gen.add_argument("--target-lang", default=None, help="language of the continuation (default: the prompt's)")
    gen.add_argument("--num-beams", type=int, default=None, help="SONAR decoder beam size (default 5)")
    gen.add_argument("--eos-threshold", type=float, default=None, help="cosine to the end sentence that stops")
    gen.add_argument("--max-sentences", type=int, default=None, help="document length limit, prompt included")
    gen.add_argument("--max-new-sentences", type=int, default=None, help="limit on generated sentences")
    gen.add_argument("--sample", action="store_true", help="sample in the SONAR decoder instead of beam search")
    gen.add_argument("--temperature", type=float, default=0.6)
    gen.add_argument("--top-p", type=float, default=0.9)
    gen.add_argument("--seed", type=int, default=None)
    # Sentence-level controls (generation_sonar_llm.py); unset flags keep the model's saved generation settings.
    gen.add_argument(
        "--min-new-sentences",
        type=int,
        default=None,
        help="avoid the end sentence before this many generated sentences",
    )
    gen.add_argument(
        "--repetition-threshold",
        type=float,
        default=None,
        help="a sentence whose text or embedding (cosine >= this) repeats ANY earlier sentence of the "
        "continuation is a repeat",
    )
    gen.add_argument(
        "--repetition-action",
        choices=["stop", "avoid"],
        default=None,
        help="stop the document before a repeat, or avoid it by re-decoding with latent noise",
    )
    gen.add_argument(
        "--avoid-special-sentences",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="never keep the begin/end sentences as story sentences",
    )
    gen.add_argument("--avoid-attempts", type=int, default=None, help="re-decodes tried to avoid a sentence")
    gen.add_argument(
        "--avoid-temperature", type=float, default=None, help="latent temperature added per re-decode attempt"
    )
    gen.add_argument(
        "--latent-temperature",
        type=float,
        default=None,
        help="Gaussian noise on each predicted embedding, relative to its rms (0: none)",
    )
    gen.add_argument(
        "--latent-top-p",
        type=float,
        default=None,
        help="draw the latent noise from its highest-density region of this mass",
    )
    gen.add_argument(
        "--reference-loop",
        action="store_true",
        help="turn off the controls above that the model's generation_config.json may turn on",
    )
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    gen.add_argument("--device", default=None)
    gen.add_argument("--trust-remote-code", action="store_true", help="use the folder's code instead of the package")
    gen.add_argument("--quiet", action="store_true", help="print only the generated sentences")
    gen.add_argument(
        "--kernels",
        choices=["plain", "onednn", "packed", "int8"],
        default="packed",
        help="SONAR speed path (sonar_llm_hf.speed): packed oneDNN weights by default on fp32 CPU (exact); "
        "int8 is approximate",
    )
    gen.add_argument(
        "--no-pack",
        dest="kernels",
        action="store_const",
        const="onednn",
        help="keep SONAR's layer weights plain (same as --kernels onednn)",
    )
    gen.set_defaults(func=_generate)
    from .evaluation.evaluate import add_evaluate_arguments, run_evaluate

    evaluate = commands.add_parser("evaluate", help="the paper's evaluation protocol (NLG, token CE, judge prompts)")
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=run_evaluate)
    from .embedding.runner import add_embed_arguments, run_embed

    embed = commands.add_parser("embed", help="split and SONAR-embed a corpus into parquet shards (LCM's layout)")
    add_embed_arguments(embed)
    embed.set_defaults(func=run_embed)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, then run the subcommand; any failure is one line on stderr and a non-zero status (`cli_errors.py`)."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
