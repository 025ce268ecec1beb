"""Convert Meta's fairseq2 SONAR text encoder/decoder checkpoints into transformers folders.

    python conversion/convert_sonar_to_hf.py --encoder sonar_text_encoder.pt --decoder sonar_text_decoder.pt \
        --tokenizer sentencepiece.source.256000.model --output sonar [--num-heads 16] [--dtype bfloat16]

writes `sonar/encoder` and `sonar/decoder` (model.safetensors, config.json with `auto_map`, the model code for
`trust_remote_code`, and the tokenizer), reloads them and checks their outputs before reporting. Either checkpoint
may be given alone. What it does (code in `sonar_llm_hf/conversion/sonar.py`):

- reads `{"model": state_dict}` with `torch.load(weights_only=True)`: a file that would run code is refused unread;
- renames every key by the regex tables `ORIGINAL_TO_CONVERTED_KEY_MAPPING` and refuses missing, unexpected or
  mis-shaped keys by name; reorders the special-token rows of the embeddings and LM head from fairseq2's
  (<pad>, <unk>, <s>, </s>) to HF NLLB's (<s>, <pad>, </s>, <unk>); checks the LM head is tied to the embedding;
- infers vocab, width, depth and FFN size from the shapes (heads from --num-heads, which must divide the width);
- writes both folders to a temporary sibling and moves them into place only after both reloaded exactly.

Exit status 0 on success, 2 on a refused input (the message says why). The weights stay CC-BY-NC-4.0 (Meta's
SONAR licence).
"""

import argparse
import sys
from pathlib import Path

try:
    import sonar_llm_hf  # noqa: F401
except ImportError:  # run from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sonar_llm_hf.conversion.checkpoints import ConversionError, folder_summary  # noqa: E402
from sonar_llm_hf.conversion.sonar import ORIGINAL_TO_CONVERTED_KEY_MAPPING, convert_sonar  # noqa: E402

__all__ = ["ORIGINAL_TO_CONVERTED_KEY_MAPPING", "convert_sonar", "main"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="fairseq2 encoder checkpoint (sonar_text_encoder.pt)")
    parser.add_argument("--decoder", help="fairseq2 decoder checkpoint (sonar_text_decoder.pt)")
    parser.add_argument("--tokenizer", help="SentencePiece model (sentencepiece.source.256000.model)")
    parser.add_argument("--output", required=True, help="folder to create; gets encoder/ and decoder/")
    parser.add_argument("--num-heads", type=int, default=16, help="attention heads (not visible in the weights)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="cast the weights (default: keep the checkpoint's)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        written = convert_sonar(args.output, args.encoder, args.decoder, args.tokenizer, args.num_heads, args.dtype)
    except ConversionError as error:
        print(f"convert_sonar_to_hf: error: {error}", file=sys.stderr)
        return 2
    for name, path in written.items():
        summary = folder_summary(path)
        print(
            f"{name}: {path} (verified by reloading) | {summary['parameters']:,} parameters, "
            f"{'/'.join(summary['dtypes'])}, {summary['bytes'] / 2**20:,.1f} MiB | vocab {summary['vocab_size']:,}, "
            f"d_model {summary['d_model']}, tokenizer: {'yes' if (path / 'tokenizer.json').exists() else 'no'}"
        )
    if not args.tokenizer:
        print("note: no --tokenizer given; the folders hold no tokenizer, so encode()/decode() need one passed in.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
