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
from perceptlib.speed import square_crop
from perceptlib.style import compare_with_optimisation, load_style, style_of


def _write(out: Path, device: torch.device, args: argparse.Namespace, runs: list) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})"
    (out / "compare.json").write_text(json.dumps({"device": name, "steps": args.steps, "size": args.size,
                                                  "init": "noise", "runs": runs}) + "\n")


def network_only(args: argparse.Namespace) -> None:
    from perceptlib.style import build_style_loss, style_loss_of, stylize

    out = Path(args.out)
    rec = json.loads((out / "compare.json").read_text())
    device = torch.device("cpu" if args.device == "auto" and not torch.cuda.is_available() else
                          ("cuda" if args.device == "auto" else args.device))
    for m in args.models:
        net = load_style(m, device=device)
        name, style = style_of(m)
        cfg = config_from_dict(net.train_config)
        loss = build_style_loss(cfg, style[None], device=device)
        for row in rec["runs"]:
            if row["style"] != name:
                continue
            content = load_image(next(out.glob(f"content__{row['content']}.*")))
            img = stylize(net, content)
            save_image(img, out / f"{name}__{row['content']}__network.{args.ext}")
            row["network"] = {"terms": style_loss_of(img, content, loss), "seconds": None,
                              "note": f"recomputed on {device} for step {net.train_step}"}
            row["model"], row["model_step"] = str(m), net.train_step
            print(f"{name} / {row['content']}: network (step {net.train_step}) loss {row['network']['terms']['total']:.4g}, "
                  f"optimisation {row['optimisation']['terms']['total']:.4g}")
    (out / "compare.json").write_text(json.dumps(rec) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--content-dir", default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="results/style_compare")
    ap.add_argument("--network-only", action="store_true",
                    help="redo only the network side (e.g. after more training), keeping the optimisation results "
                         "and images already in --out/compare.json")
    ap.add_argument("--ext", default="png", help="image format of the written images (png, jpg)")
    args = ap.parse_args()
    if args.network_only:
        return network_only(args)
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
            content = square_crop(load_image(photo), args.size)
            save_image(content, out / f"content__{photo.stem}.{args.ext}")
            res = compare_with_optimisation(net, content, style[None], cfg, steps=args.steps, device=device)
            row = {"style": name, "content": photo.stem, "size": args.size, "model": str(m),
                   "model_step": net.train_step}
            for method in ("network", "optimisation"):
                save_image(res[method]["image"], out / f"{name}__{photo.stem}__{method}.{args.ext}")
                row[method] = {k: v for k, v in res[method].items() if k != "image"}
            runs.append(row)
            _write(out, device, args, runs)  # after every pair: a run cut short keeps what it did
            print(f"{name} / {photo.stem}: network loss {row['network']['terms']['total']:.4g} "
                  f"({row['network']['seconds']:.3g} s), optimisation {args.steps} its "
                  f"{row['optimisation']['terms']['total']:.4g} ({row['optimisation']['seconds']:.3g} s)")
    print(f"wrote {out}/compare.json and {2 * len(runs) + len(photos)} images")


if __name__ == "__main__":
    main()
