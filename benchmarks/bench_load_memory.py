"""Peak memory of loading full-size SONAR (SONAR issue #55: loading the decoder pipeline peaked at 12-14.7 GB).

    python benchmarks/bench_load_memory.py [--work DIR] [--parts encoder decoder] [--quick]

For each part, a subprocess saves a full-size model of our class with random weights (`save_pretrained`,
safetensors, fp32: built on the meta device and materialised tensor by tensor, so the saving process holds one copy);
then a fresh subprocess imports torch, transformers and this package, notes its RSS, runs `from_pretrained` and
reports the peak RSS it added (`VmHWM` - RSS before) against the safetensors file size, right after the load and
after reading every weight once (as the first forward pass does). transformers 5 builds the modules on the meta device
and maps the safetensors file (mmap), so the load itself reads almost nothing, and reading the weights adds one copy
of them at most (file-backed pages, which the kernel can drop and re-read under memory pressure).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=256, decoder_ffn_dim=256, vocab_size=4000)  # fmt: skip


def _status(field: str) -> int:
    """A /proc/self/status field (VmRSS, VmHWM) in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def save(part: str, folder: str, quick: bool) -> None:
    import torch

    from sonar_llm_hf import SonarTextDecoder, SonarTextDecoderConfig, SonarTextEncoder, SonarTextEncoderConfig

    config_class, model_class = {"encoder": (SonarTextEncoderConfig, SonarTextEncoder),
                                 "decoder": (SonarTextDecoderConfig, SonarTextDecoder)}[part]  # fmt: skip
    config = config_class(**(QUICK if quick else {}))
    with torch.device("meta"):
        model = model_class(config)
    model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives tied parameters separate storage
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.normal_(0, 0.02, generator=generator)
    model.save_pretrained(folder)


def load(part: str, folder: str) -> None:
    import torch
    import transformers  # noqa: F401

    from sonar_llm_hf import SonarTextDecoder, SonarTextEncoder

    model_class = SonarTextEncoder if part == "encoder" else SonarTextDecoder
    before = _status("VmRSS")
    model = model_class.from_pretrained(folder)
    after = _status("VmRSS")
    peak_load = _status("VmHWM") - before
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.sum()  # reads every page: mmap-backed weights become resident, as in the first forward pass
    size = sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    print(json.dumps({"part": part, "file_bytes": size, "param_bytes": params, "rss_before": before,
                      "rss_after_load": after, "peak_added_by_load": peak_load,
                      "peak_added": _status("VmHWM") - before,
                      "ratio_peak_to_file": (_status("VmHWM") - before) / size}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=None)
    parser.add_argument("--parts", nargs="+", default=["encoder", "decoder"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI)")
    parser.add_argument("--_save", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--_load", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._save:
        return save(*args._save, quick=args.quick)
    if args._load:
        return load(*args._load)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for part in args.parts:
            folder = str(Path(tmp) / part)
            flags = ["--quick"] if args.quick else []
            subprocess.run([sys.executable, __file__, "--_save", part, folder, *flags], check=True, cwd=ROOT)
            out = subprocess.run([sys.executable, __file__, "--_load", part, folder], check=True, cwd=ROOT,
                                 capture_output=True, text=True).stdout  # fmt: skip
            rows.append(json.loads(out.strip().splitlines()[-1]))
            for file in Path(folder).glob("*"):
                file.unlink()  # free the disk before the next part
    print(
        "| part | safetensors | peak RSS added by from_pretrained | ... and after reading every weight | "
        "peak / file |\n|---|---|---|---|---|"
    )
    for r in rows:
        print(f"| {r['part']} | {r['file_bytes'] / 2**30:.2f} GiB | {r['peak_added_by_load'] / 2**30:.2f} GiB | "
              f"{r['peak_added'] / 2**30:.2f} GiB | {r['ratio_peak_to_file']:.2f}x |")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
