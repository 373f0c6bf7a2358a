"""Fig. 3 (Johnson et al. 2016) at the paper's 256 px from white noise: which change brings back the structure
that the deep-layer reconstructions of notebook 01 lack?

One photo (notebook 01's first, ``chelsea``), layers relu2_2 (control), relu4_3, relu5_1, relu5_3, four variants:

  a  torchvision VGG-16, no regulariser (notebook 01's recipe, at 256 px)
  b  torchvision VGG-16 + TV
  c  Caffe VGG-16 (the paper's network) + TV
  d  Caffe VGG-16, no regulariser

TV is the squared-difference total variation of :func:`perceptlib.losses.total_variation` (Mahendran & Vedaldi's
TV^beta with beta = 2). Its weight is set relative to the start: ``tv_weight = tau * l_feat(x0) / TV(x0)``
for the white-noise start ``x0`` (so ``tau`` is TV's share of the loss at the start, the same for both
networks and every layer although their feature losses differ by orders of magnitude). ``tau`` is chosen by a
sweep on relu4_3 (``--sweep``: torchvision by default; a network not swept takes the first swept network's
``tau``): the largest value whose TV term is at most ``--max-tv-share`` of the final loss (else the smallest).
The chosen sweep run is the variant's relu4_3 result. Layers run in the order given (relu2_2, the control,
last by default), so a run cut short for time keeps the deep layers.

Every run is :func:`perceptlib.experiments.run_spec` (projected L-BFGS, loss divided by its start value),
bf16 autocast for the loss network where the CPU has native bf16 (the image and L-BFGS stay fp32).
Results: ``results/reconstruction_fig3/{run}.png`` and ``fig3_variants.json``; an interrupted run resumes.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python scripts/fig3_variants.py [--steps 400] [--time-only]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from perceptlib import experiments as ex
from perceptlib.data import demo_image_paths
from perceptlib.images import save_image
from perceptlib.losses import total_variation
from perceptlib.precision import bf16_supported, describe_machine
from perceptlib.reconstruct import init_image
from perceptlib.vgg import LAYER_NAMES

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("relu4_3", "relu5_3", "relu5_1", "relu2_2")  # run order; shown in network order
VARIANTS = {  # name: (label, loss-network weights, TV on)
    "a": ("torchvision, no TV (notebook 01)", "torchvision", False),
    "b": ("torchvision + TV", "torchvision", True),
    "c": ("Caffe + TV", "caffe", True),
    "d": ("Caffe, no TV", "caffe", False),
}
SWEEP_LAYER = "relu4_3"


def start_ratio(image: torch.Tensor, layer: str, weights: str, size: int, seed: int) -> float:
    """``l_feat(x0) / TV(x0)`` at the white-noise start ``x0`` (fp32): tv_weight = tau * this."""
    spec = ex.RunSpec("feature", "photo", ((layer, 1.0),), size, 1, weights=weights, init="noise", seed=seed)
    loss = ex.build_loss(spec)
    loss.set_target(image)
    x0 = init_image("noise", size, seed=seed)
    with torch.no_grad():
        return float(loss(x0)) / float(total_variation(x0))


def curve(history: list[float], every: int = 10) -> list[float]:
    """The best loss so far after every ``every`` evaluations (and at the end)."""
    best, out = float("inf"), []
    for i, h in enumerate(history, 1):
        best = min(best, h)
        if i % every == 0 or i == len(history):
            out.append(float(f"{best:.6g}"))
    return out


def flattening(history: list[float], frac: float = 0.25) -> float:
    """Relative decrease of the best loss over the last ``frac`` of the evaluations (0: flat)."""
    n = len(history)
    before, end = min(history[: max(1, int(n * (1 - frac)))]), min(history)
    return float(f"{(before - end) / before:.4g}")


def run_one(name: str, image: torch.Tensor, layer: str, weights: str, tau: float, args, precision: str,
            steps: int) -> dict:
    tv_weight = float(f"{tau * start_ratio(image, layer, weights, args.size, args.seed):.4g}") if tau else 0.0
    spec = ex.RunSpec("feature", args.photo, ((layer, 1.0),), args.size, steps, weights=weights,
                      init="noise", tv_weight=tv_weight, seed=args.seed)
    r = ex.run_spec(spec, image, cache=None, progress=False, precision=precision)
    save_image(r["image"][0], args.out / f"{name}.png")
    final = r["final"]
    return {
        "name": name, "layer": layer, "weights": weights, "tv_tau": tau, "tv_weight": tv_weight,
        "psnr": r["metrics"]["psnr"], "ssim": r["metrics"]["ssim"], "lpips": r["metrics"]["lpips"],
        "final_loss": final["total"], "feat_loss": final.get("feat", final["total"] - final.get("tv", 0.0)),
        "tv_loss": final.get("tv", 0.0), "tv_share": float(f"{final.get('tv', 0.0) / final['total']:.4g}"),
        "start_loss": r["history"][0], "evaluations": r["steps"], "iterations": r["iterations"],
        "stopped": r["stopped"], "flattening_last_25pct": flattening(r["history"]), "curve_every_10": curve(r["history"]),
        "seconds": r["seconds"], "precision": r["precision"], "machine": describe_machine("cpu"),
        "png": f"{name}.png", "spec": r["spec"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "results" / "reconstruction_fig3")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=400, help="L-BFGS loss evaluations per reconstruction")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--taus", type=float, nargs="+", default=[0.03, 0.3, 1.0], help="TV sweep (share at the start)")
    p.add_argument("--max-tv-share", type=float, default=0.25)
    p.add_argument("--sweep", nargs="+", default=["torchvision"], help="networks swept (others: the first's tau)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--layers", nargs="+", default=list(LAYERS))
    p.add_argument("--time-only", action="store_true", help="time 10 evaluations per layer and exit")
    p.add_argument("--longer", nargs="+", default=[], metavar="VARIANT:LAYER",
                   help="after the grid: rerun these with --longer-steps evaluations (is --steps converged?)")
    p.add_argument("--longer-steps", type=int, default=1000)
    args = p.parse_args()
    torch.set_num_threads(1)
    precision = "bf16" if bf16_supported("cpu") else "off"
    args.photo = demo_image_paths()[0].stem
    image = ex.square_image(demo_image_paths()[0], args.size)

    if args.time_only:
        for layer in args.layers:
            spec = ex.RunSpec("feature", args.photo, ((layer, 1.0),), args.size, 10, init="noise")
            t = time.perf_counter()
            ex.run_spec(spec, image, progress=False, precision=precision)
            print(f"{layer}: {(time.perf_counter() - t) / 10:.3f} s per evaluation ({precision})", flush=True)
        return

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "fig3_variants.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    runs: dict[str, dict] = {r["name"]: r for r in doc.get("runs", [])}
    layers = set(doc.get("layers", [])) | set(args.layers)
    variants = set(doc.get("variants", {})) | set(args.variants)
    doc.update(photo=args.photo, size=args.size, steps=doc.get("steps", args.steps) if args.longer else args.steps,
               init="noise", optimizer="lbfgs",
               precision=precision, machine=describe_machine("cpu"),
               layers=[n for n in LAYER_NAMES if n in layers],
               variants={k: {"label": v[0], "weights": v[1], "tv": v[2]} for k, v in VARIANTS.items() if k in variants},
               tv_rule=f"tv_weight = tau * l_feat(x0) / TV(x0) at the white-noise start x0; tau: the largest of "
                       f"{args.taus} whose TV term is <= {args.max_tv_share:.0%} of the final loss on {SWEEP_LAYER}, "
                       f"else the smallest")

    def save() -> None:
        doc["runs"] = sorted(runs.values(), key=lambda r: r["name"])
        path.write_text(json.dumps(doc, indent=1) + "\n")

    def get(name: str, layer: str, weights: str, tau: float, steps: int | None = None) -> dict:
        steps = steps or args.steps
        if name in runs and (args.out / runs[name]["png"]).is_file() and runs[name]["evaluations"] == steps:
            return runs[name]
        t = time.perf_counter()
        runs[name] = run_one(name, image, layer, weights, tau, args, precision, steps)
        save()
        r = runs[name]
        print(f"{name}: PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} loss {r['start_loss']:.4g} -> {r['final_loss']:.4g} "
              f"(TV {r['tv_share']:.1%}, last-25% drop {r['flattening_last_25pct']:.2%}, {r['iterations']} it) "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        return r

    if args.longer:  # after the grid, with its tau
        for item in args.longer:
            v, layer = item.split(":")
            _, weights, tv = VARIANTS[v]
            name = f"{v}_{layer}_eval{args.longer_steps}"
            get(name, layer, weights, doc["tv_tau"][weights] if tv else 0.0, args.longer_steps)
            doc.setdefault("longer", {}).setdefault(v, {})[layer] = name
            save()
        return

    taus: dict[str, float] = {}
    for weights in args.sweep:
        sweep = [get(f"sweep_{weights}_tau{tau:g}_{SWEEP_LAYER}", SWEEP_LAYER, weights, tau) for tau in args.taus]
        ok = [r for r in sweep if r["tv_share"] <= args.max_tv_share]
        taus[weights] = max(ok, key=lambda r: r["tv_tau"])["tv_tau"] if ok else min(args.taus)
        doc.setdefault("tv_sweep", {})[weights] = [{k: r[k] for k in ("tv_tau", "tv_weight", "tv_share", "psnr", "ssim",
                                                                        "final_loss", "name")} for r in sweep]
    for weights in dict.fromkeys(VARIANTS[v][1] for v in args.variants if VARIANTS[v][2]):
        taus.setdefault(weights, taus[args.sweep[0]])
    doc["tv_tau"] = taus
    doc["tv_tau_from"] = {w: w if w in args.sweep else args.sweep[0] for w in taus}
    table = doc.setdefault("table", {})
    order = [SWEEP_LAYER] + [layer for layer in args.layers if layer != SWEEP_LAYER]
    for layer in order:
        for v in args.variants:
            _, weights, tv = VARIANTS[v]
            tau = taus[weights] if tv else 0.0
            name = (f"sweep_{weights}_tau{tau:g}_{SWEEP_LAYER}" if tv and layer == SWEEP_LAYER and weights in args.sweep
                    else f"{v}_{layer}")
            get(name, layer, weights, tau)
            table.setdefault(v, {})[layer] = name
            save()
    save()
    total = sum(r["seconds"] for r in runs.values())
    print(f"{len(runs)} runs, {total / 60:.1f} min of optimisation; wrote {path}")


if __name__ == "__main__":
    main()
