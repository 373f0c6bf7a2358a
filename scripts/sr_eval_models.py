"""Evaluate trained SR networks (and bicubic) on the evaluation sets, with and without the paper's
histogram matching, into one JSON: ``{"x4": {set: {method: {"psnr", "ssim", "lpips"}}}, "x8": ..., "meta": ...}``.

Run:  python scripts/sr_eval_models.py --models results/h100/sr_x4_pixel results/h100/sr_x4_feat ...
                                       [--sets set5 set14 bsd100] [--no-hist-match] [--out results/h100/sr_eval.json]

Method names are the model folders' names (``sr_x4_feat`` -> ``feat``; ``sr_x4_feat_pix1e6`` -> ``feat_pix1e6``),
plus ``+histmatch``. Protocol: benchmark LR (MATLAB bicubic without blur, 8-bit), PSNR/SSIM on Y with a
``scale``-pixel border, LPIPS v0.1 AlexNet (:func:`perceptlib.metrics.evaluate_sr`).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from perceptlib.data import image_paths, set_info
from perceptlib.degrade import bicubic_upsample
from perceptlib.metrics import evaluate_sr
from perceptlib.sr import load_sr, sr_upscale_fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--sets", nargs="+", default=["set5", "set14", "bsd100"])
    ap.add_argument("--no-hist-match", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/h100/sr_eval.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_path = Path(args.out)
    res = json.loads(out_path.read_text()) if out_path.is_file() else {"meta": {"models": {}}}
    for m in args.models:
        model = load_sr(m)
        name = Path(m).name.split("_", 2)[2]  # sr_x4_feat_pix1e6 -> feat_pix1e6
        if Path(m).name.startswith("sr_impl_"):  # sr_impl_x4_feat -> feat_impl
            name = Path(m).name.split("_", 3)[3] + "_impl"
        key = f"x{model.scale}"
        res["meta"]["models"][f"{key}/{name}"] = {"path": str(m), "step": model.train_step,
                                                  "config": model.train_config}
        for s in args.sets:
            table = res.setdefault(key, {}).setdefault(s, {})
            if "bicubic" not in table:
                table["bicubic"] = evaluate_sr(image_paths(s), lambda lr: bicubic_upsample(lr, model.scale),
                                               model.scale, None, method="bicubic")["mean"]
            for hm in ([False] if args.no_hist_match else [False, True]):
                t = time.perf_counter()
                r = evaluate_sr(image_paths(s), sr_upscale_fn(model, hm), model.scale, None, method=name)
                table[name + ("+histmatch" if hm else "")] = r["mean"]
                print(f"{key} {s:7s} {name + ('+histmatch' if hm else ''):22s} PSNR {r['mean']['psnr']:.2f} "
                      f"SSIM {r['mean']['ssim']:.4f} LPIPS {r['mean']['lpips']:.4f} "
                      f"checkerboard {r['mean']['checkerboard_db']:+.1f} dB (" +
                      ", ".join(f"{k}: {v:+.1f}" for k, v in (r["mean"]["checkerboard_peaks"] or {}).items()) +
                      f") ({time.perf_counter() - t:.0f} s)", flush=True)
            res["meta"]["sets"] = {s: {k: set_info(s)[k] for k in ("label", "standin", "count")} for s in args.sets}
            res["meta"]["protocol"] = {"lr": "benchmark (MATLAB bicubic, no blur), 8-bit",
                                       "psnr": "Y (BT.601), border = scale", "ssim": "Gaussian 11x11 sigma 1.5 on Y",
                                       "lpips": "v0.1 AlexNet, RGB",
                                       "checkerboard_db": "energy at the upsampling frequencies, output vs HR "
                                                          "(perceptlib.metrics.checkerboard_db)",
                                       "checkerboard_peaks": "the same per pattern, keyed by frequency in cycles "
                                                             "per pixel (perceptlib.metrics.checkerboard_spectrum)"}
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
