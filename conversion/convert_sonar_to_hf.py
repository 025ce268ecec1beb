"""Convert Meta's fairseq2 SONAR text encoder/decoder checkpoints into transformers folders.

    python conversion/convert_sonar_to_hf.py --encoder sonar_text_encoder.pt --decoder sonar_text_decoder.pt \
        --tokenizer sentencepiece.source.256000.model --output sonar

writes `sonar/encoder` and `sonar/decoder` (safetensors, config with `auto_map`, model code, tokenizer), reloads them
and checks their outputs before reporting. The weights stay CC-BY-NC-4.0 (Meta's SONAR licence).
"""

import argparse
import sys

from sonar_llm_hf.conversion_sonar import convert_sonar
from sonar_llm_hf.conversion_utils import ConversionError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", help="fairseq2 encoder checkpoint (sonar_text_encoder.pt)")
    parser.add_argument("--decoder", help="fairseq2 decoder checkpoint (sonar_text_decoder.pt)")
    parser.add_argument("--tokenizer", help="SentencePiece model (sentencepiece.source.256000.model)")
    parser.add_argument("--output", required=True, help="folder to create; gets encoder/ and decoder/")
    parser.add_argument("--num-heads", type=int, default=16, help="attention heads (not visible in the weights)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="cast the weights (default: keep the checkpoint's)")
    args = parser.parse_args(argv)
    try:
        written = convert_sonar(args.output, args.encoder, args.decoder, args.tokenizer, args.num_heads, args.dtype)
    except ConversionError as error:
        print(f"convert_sonar_to_hf: error: {error}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path} (verified by reloading)")
    if not args.tokenizer:
        print("note: no --tokenizer given; the folders hold no tokenizer, so encode()/decode() need one passed in.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
