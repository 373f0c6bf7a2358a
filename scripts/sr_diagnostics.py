"""Why are the trained SR networks below bicubic? Evaluation-only tests of the explanations.

Run:  python scripts/sr_diagnostics.py [--models DIR ...] [--sets set5 set14] [--patches 64] [--out FILE]

For each trained SRNet (default: the committed x4/x8 l_pixel/l_feat networks) and each evaluation set
(benchmark protocol: antialiased bicubic x1/s, 8-bit LR), PSNR (Y, ``scale``-pixel border) and the
checkerboard energy (:func:`perceptlib.metrics.checkerboard_db`) for:

- ``bn eval``: batch norm with the running statistics stored in the checkpoint (what ``upscale`` does);
- ``bn recomputed``: the running statistics re-estimated (cumulative average) from ``--patches``
  training patches at the training patch size, with the final weights;
- ``bn batch``: batch norm using each test image's own statistics (train-mode BN, batch of one);
- ``blur LR``: ``bn eval`` on LR images made the way the training LR were (Gaussian sigma 1 + bicubic);
- each of the first two ``+ h.m.``: histogram-matched to the LR input (the paper's post-processing).

Writes ``--out`` (default results/sr_diagnostics.json) and prints a table.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

DEFAULT_MODELS = ["results/h100/sr_x4_pixel", "results/h100/sr_x4_feat", "results/h100/sr_x8_pixel",
                  "results/h100/sr_x8_feat", "results/sr_x4_pixel", "results/sr_x4_feat"]


def recompute_bn(model: torch.nn.Module, cfg, patches: int) -> torch.nn.Module:
    """A copy of ``model`` whose BN running statistics are the cumulative average over ``patches`` training
    patches (batches of 4 at ``cfg.patch_size``), weights unchanged."""
    from perceptlib.config import config_from_dict
    from perceptlib.sr import build_sr_data

    cfg = config_from_dict(cfg)
    data = build_sr_data(dataclasses.replace(cfg, train_set="train", seed=cfg.seed + 1))
    m = copy.deepcopy(model)
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    m.train()
    with torch.no_grad():
        for b in range(0, patches, 4):
            lr = torch.stack([data[i][0] for i in range(b, b + 4)])
            m(lr)
    return m.eval()


def batch_stats_fn(model: torch.nn.Module):
    """Upscale with train-mode BN (the image's own statistics); running stats left untouched."""
    m = copy.deepcopy(model)

    def fn(lr: torch.Tensor) -> torch.Tensor:
        m.train()
        with torch.no_grad():
            return m(lr[None])[0].clamp(0, 1)

    return fn


def evaluate(paths, fn, scale: int, blur: float | None, hist_match: bool = False) -> dict:
    from perceptlib.degrade import degrade, mod_crop, quantize
    from perceptlib.images import load_image
    from perceptlib.metrics import checkerboard_db, psnr
    from perceptlib.sr import histogram_match

    ps, cb = [], []
    for p in paths:
        hr = mod_crop(load_image(p), scale)
        lr = degrade(hr, scale, blur, quantize_lr=True)
        sr = fn(lr)
        if hist_match:
            sr = histogram_match(sr, lr)
        sr = quantize(sr.clamp(0, 1))
        ps.append(float(psnr(sr, hr, scale)))
        cb.append(checkerboard_db(sr, hr, scale))
    return {"psnr": statistics.mean(ps), "checkerboard_db": statistics.mean(cb)}


def main(argv: list[str] | None = None) -> int:
    from perceptlib.data import image_paths
    from perceptlib.degrade import bicubic_upsample
    from perceptlib.sr import load_sr, upscale

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--sets", nargs="+", default=["set5", "set14"])
    ap.add_argument("--patches", type=int, default=64)
    ap.add_argument("--out", default="results/sr_diagnostics.json")
    ap.add_argument("--merge", action="store_true", help="keep the other models already in --out")
    args = ap.parse_args(argv)
    res: dict = {"protocol": "benchmark LR (antialiased bicubic, 8-bit) unless 'blur LR'; PSNR on Y, border = scale",
                 "patches_for_bn": args.patches, "models": {}, "bicubic": {}}
    if args.merge and Path(args.out).is_file():
        res["models"] = json.loads(Path(args.out).read_text())["models"]
    for s in args.sets:
        for scale in (4, 8):
            res["bicubic"][f"x{scale}/{s}"] = evaluate(image_paths(s), lambda lr, k=scale: bicubic_upsample(lr, k),
                                                       scale, None)
    for folder in args.models:
        if not Path(folder).exists():
            print(f"skip {folder}: not found")
            continue
        model = load_sr(folder)
        cfg = model.train_config
        fixed = recompute_bn(model, cfg, args.patches) if any(
            isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) else model
        variants = {
            "bn eval": (lambda lr: upscale(model, lr, precision="off"), None, False),
            "bn eval + h.m.": (lambda lr: upscale(model, lr, precision="off"), None, True),
            "bn recomputed": (lambda lr: upscale(fixed, lr, precision="off"), None, False),
            "bn recomputed + h.m.": (lambda lr: upscale(fixed, lr, precision="off"), None, True),
            "bn batch": (batch_stats_fn(model), None, False),
            "blur LR": (lambda lr: upscale(model, lr, precision="off"), 1.0, False),
        }
        out = res["models"][folder] = {"loss": cfg.get("loss"), "scale": model.scale, "step": model.train_step,
                                       "patch_size": cfg.get("patch_size"), "sets": {}}
        for s in args.sets:
            paths = image_paths(s)
            row = out["sets"][s] = {}
            for name, (fn, blur, hm) in variants.items():
                row[name] = evaluate(paths, fn, model.scale, blur, hm)
            row["bicubic blur LR"] = evaluate(paths, lambda lr: bicubic_upsample(lr, model.scale), model.scale, 1.0)
            bic = res["bicubic"][f"x{model.scale}/{s}"]["psnr"]
            print(f"{folder} ({cfg.get('loss')}, x{model.scale}, step {model.train_step}) {s}: bicubic {bic:.2f}; "
                  + "; ".join(f"{n} {v['psnr']:.2f} dB / cb {v['checkerboard_db']:+.1f}" for n, v in row.items()),
                  flush=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
