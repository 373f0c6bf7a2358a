"""The paper's Table 1: seconds for style transfer by optimisation (Gatys et al.) at 100/300/500
iterations vs one forward pass of the transformation network, at 256², 512² and 1024².

Run:  python benchmarks/style_speed.py [--device auto|cpu|cuda] [--sizes 256 512 1024]
                                       [--model results/style_starry_night] [--budget 120]
                                       [--out results/style_speed.json]

Optimisation: :func:`perceptlib.style.optimise_style` (projected L-BFGS, white-noise start, the
training loss of the style network: content relu3_3, four style Grams, TV; Caffe VGG-16), timed from
the start of the run to each checkpoint count of loss+gradient evaluations (one L-BFGS iteration
is one evaluation when its line search accepts the first step, which is the usual case; the
count of iterations is at most the count of evaluations). When the projected time of a size exceeds ``--budget`` seconds
the run stops early and the remaining counts are extrapolated from the measured time per
evaluation after the first (``"measured": false`` in the JSON; the table marks them with ~).
Network: the TransformerNet of ``--model`` (or a freshly initialised one of the paper's architecture;
speed does not depend on the weights), batch 1, eval mode, no grad, float32: median of ``--repeats``
timed passes after warm-up, with CUDA synchronisation. Both float32 by default (cuDNN's default TF32
convolutions on Ampere/Hopper GPUs); ``--precision auto`` times both in bf16 autocast where the device
has native bf16 (``perceptlib.precision``; the optimised image stays float32).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from perceptlib.config import PAPER_STYLE
from perceptlib.data import image_paths
from perceptlib.images import load_image
from perceptlib.nets import TransformerNet
from perceptlib.precision import describe_machine
from perceptlib.speed import time_network, time_optimisation
from perceptlib.style import load_style

PAPER = {256: (3.17, 9.52, 15.86, 0.015), 512: (10.97, 32.91, 54.85, 0.05), 1024: (42.89, 128.66, 214.44, 0.21)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--iters", type=int, nargs="+", default=[100, 300, 500])
    ap.add_argument("--model", default=None, help="a trained style network (default: freshly initialised)")
    ap.add_argument("--style", default="starry_night", help="a file or a name in the 'styles' set")
    ap.add_argument("--content", default="chelsea", help="a file or a name in the 'content' set")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of optimisation per size before extrapolating")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--precision", choices=["off", "auto", "bf16"], default="off",
                    help="off: float32 (the paper's Table 1); auto/bf16: bf16 autocast where supported, for the "
                         "network and the loss network of the optimisation (the image stays float32)")
    ap.add_argument("--out", default="results/style_speed.json")
    args = ap.parse_args()
    from perceptlib.precision import resolve_precision

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({describe_machine('cpu')['name']}, {torch.get_num_threads()} threads)"
    used = resolve_precision(args.precision, device)
    dtype = "float32" if used == "fp32" else "bfloat16 autocast"
    style_file = Path(args.style) if Path(args.style).is_file() else {p.stem: p for p in image_paths("styles")}[args.style]
    content_file = Path(args.content) if Path(args.content).is_file() else \
        {p.stem: p for p in image_paths("content")}[args.content]
    content = load_image(content_file)
    net = load_style(args.model, device=device) if args.model else TransformerNet().to(device).eval()
    rows, finals = [], {}
    for size in args.sizes:
        opt, final = time_optimisation(content, style_file, PAPER_STYLE, size, sorted(args.iters), device,
                                       args.budget, precision=used)
        finals[size] = final
        for n, (sec, measured) in opt.items():
            rows.append({"size": size, "method": "optimisation", "iterations": n, "seconds": sec, "measured": measured})
        rows.append({"size": size, "method": "network", "iterations": None,
                     "seconds": time_network(net, size, device, args.repeats, precision=used), "measured": True})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result = {"device": name, "dtype": dtype, "precision": used, "torch": str(torch.__version__),
              "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None,
              "network": str(args.model or "TransformerNet() freshly initialised (paper architecture)"),
              "style": style_file.stem, "content": content_file.stem, "optimiser": "projected L-BFGS, noise start",
              "iterations_are": "loss+gradient evaluations", "final_loss": finals, "rows": rows,
              "paper": {"device": "GTX Titan X", "rows": PAPER}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")

    print(f"device: {name}; {dtype}; iterations = loss+gradient evaluations; ~ = extrapolated")
    its = sorted(args.iters)
    print("| size | " + " | ".join(f"opt {n}" for n in its) + " | network | "
          + " | ".join(f"speed-up vs {n}" for n in its) + " | paper (Titan X): opt 100 / 300 / 500 / net |")
    print("|---" * (3 + 2 * len(its)) + "|")
    for size in args.sizes:
        r = {row["iterations"]: row for row in rows if row["size"] == size}
        net_s = r[None]["seconds"]
        cells = [f"{'~' if not r[n]['measured'] else ''}{r[n]['seconds']:.3g}" for n in sorted(args.iters)]
        ups = [f"{r[n]['seconds'] / net_s:.0f}x" for n in sorted(args.iters)]
        p = PAPER.get(size)
        paper = f"{p[0]} / {p[1]} / {p[2]} / {p[3]}" if p else ""
        print(f"| {size} | " + " | ".join(cells) + f" | {net_s:.4g} | " + " | ".join(ups) + f" | {paper} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
