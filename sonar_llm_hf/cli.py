"""`sonar-llm`: command-line entry point.

    sonar-llm generate "Once upon a time, there was a cat. The cat was hungry." [--model PATH_OR_REPO]
    sonar-llm evaluate --model M --dataset D [--split S] [--prefix short|long|both] [--limit N] --out DIR

Sentences are printed as soon as they are decoded. Without `--model` the offline demo model is used (see
`sonar_llm_hf.demo`): a miniature trained here to show the method, not a language model. On CPU in fp32, `generate`
packs SONAR's layer weights for oneDNN first (`pack_sonar`: exact, same memory, faster; `--no-pack` keeps them plain).
A failure prints one line on stderr and exits with a non-zero status, 2 for bad input (`cli_errors.py`;
SONAR_LLM_TRACEBACK=1 also prints the traceback).
"""

from __future__ import annotations

import argparse
import sys

from .cli_errors import run_command


def prepare_for_inference(model, pack: bool = True):
    """`model` in eval mode, its SONAR layers packed for oneDNN where that is exact and faster (fp32 on CPU); a
    command that only generates never trains or saves the model, which is all that packing gives up."""
    from .models.onednn_linear import onednn_applies
    from .packing import pack_sonar

    model.eval()
    if pack and onednn_applies(model):
        pack_sonar(model)
    return model


def _generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModel

    from . import PrintSentenceStreamer
    from .demo import default_model_path

    path = args.model or default_model_path(verbose=True)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[args.dtype]
    model = AutoModel.from_pretrained(path, dtype=dtype, trust_remote_code=args.trust_remote_code)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    prepare_for_inference(model.to(device), pack=args.pack)
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
    )
    if args.sample:
        options.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    model.generate(prompts, streamer=streamer, **{k: v for k, v in options.items() if v is not None})
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
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    gen.add_argument("--device", default=None)
    gen.add_argument("--trust-remote-code", action="store_true", help="use the folder's code instead of the package")
    gen.add_argument("--quiet", action="store_true", help="print only the generated sentences")
    gen.add_argument("--no-pack", dest="pack", action="store_false",
                     help="keep SONAR's plain layers on CPU (by default fp32 weights are packed for oneDNN: "
                          "exact, faster)")  # fmt: skip
    gen.set_defaults(func=_generate)
    from .evaluation.evaluate import add_evaluate_arguments, run_evaluate

    evaluate = commands.add_parser("evaluate", help="the paper's evaluation protocol (NLG, token CE, judge prompts)")
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(func=run_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse, then run the subcommand; any failure is one line on stderr and a non-zero status (`cli_errors.py`)."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
