"""Trained style networks vs the optimisation baseline with the same loss, on content photos not
trained on: images and loss terms for notebook 03.

Run:  python scripts/style_compare.py --models results/style_starry_night results/style_great_wave
                                      [--content-dir DIR] [--size 256] [--steps 500] [--device auto]
                                      [--out results/style_compare]

For each network (its style is read from the ``style.json``/``style.png`` that ``train-style`` wrote)
and each content photo (the ``content`` set, or ``--content-dir``; centre square crop resized to
``--size``), writes ``<out>/<style>__<photo>__network.png`` and ``__optimisation.png``, the crops
``<out>/content__<photo>.png`` and ``<out>/compare.json`` with the loss terms of both, the
optimisation's loss curve (every evaluation) and the wall times.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from perceptlib.config import config_from_dict
from perceptlib.images import find_images, load_image, save_image
from perceptlib.style import compare_with_optimisation, load_style, style_of


def square(img: torch.Tensor, size: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    s = min(h, w)
    crop = img[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return torch.nn.functional.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False)[0].clamp(0, 1)


def _write(out: Path, device: torch.device, args: argparse.Namespace, runs: list) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    (out / "compare.json").write_text(json.dumps({"device": name, "steps": args.steps, "size": args.size,
                                                  "init": "noise", "runs": runs}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--content-dir", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="results/style_compare")
    args = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if args.content_dir:
        photos = find_images(args.content_dir)
    else:
        from perceptlib.data import image_paths

        photos = image_paths("content")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for m in args.models:
        net = load_style(m, device=device)
        name, style = style_of(m)
        cfg = config_from_dict(net.train_config)
        cfg = type(cfg)(**{**cfg.__dict__, "device": str(device)})
        for photo in photos:
            content = square(load_image(photo), args.size)
            save_image(content, out / f"content__{photo.stem}.png")
            res = compare_with_optimisation(net, content, style[None], cfg, steps=args.steps, device=device)
            row = {"style": name, "content": photo.stem, "size": args.size, "model": str(m),
                   "model_step": net.train_step}
            for method in ("network", "optimisation"):
                save_image(res[method]["image"], out / f"{name}__{photo.stem}__{method}.png")
                row[method] = {k: v for k, v in res[method].items() if k != "image"}
            runs.append(row)
            _write(out, device, args, runs)  # after every pair: a run cut short keeps what it did
            print(f"{name} / {photo.stem}: network loss {row['network']['terms']['total']:.4g} "
                  f"({row['network']['seconds']:.3g} s), optimisation {args.steps} its "
                  f"{row['optimisation']['terms']['total']:.4g} ({row['optimisation']['seconds']:.3g} s)")
    print(f"wrote {out}/compare.json and {2 * len(runs) + len(photos)} images")


if __name__ == "__main__":
    main()
