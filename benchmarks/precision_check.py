"""Does bf16 autocast change the results? The same runs from the same seed in fp32 and in bf16.

Run:  python benchmarks/precision_check.py [--sr-steps 500] [--style-steps 300] [--out results/precision_check.json]
      python benchmarks/precision_check.py --sr-recipe impl --style-recipe impl --out results/precision_check_impl.json
      python benchmarks/precision_check.py --sr-only --sr-recipe impl --out results/precision_check_sr_impl.json
      python benchmarks/precision_check.py --style-only --style-recipe impl --seeds 2 3 \
          --with results/precision_check_impl.json --out results/precision_check_style_impl_seeds.json

Four checks (CPU; bf16 needs a CPU with native bf16, else the script says so and stops):

1. SR x4, l_feat (relu2_2, Caffe VGG), 96^2 HR patches, batch 4, ``--sr-steps`` steps, the
   ``--sr-recipe`` (``paper``: batch norm, deconv; ``impl``: no norm, nearest-conv): the loss of the
   two trained networks on a fixed held-out batch (64 patches of the 'set14' and 'bsd100' stand-ins,
   evaluated in fp32) and the mean training loss of the last 50 steps; goal: within 3 %. ``--sr-only``
   runs this check alone.
2. Style (Starry Night, cpu-mode config: 128^2, batch 4, the ``--style-recipe``), ``--style-steps`` steps: the
   same two losses
   (held-out: the 5 'content' and 14 'set14' photos at 128^2); goal: within 3 %.

Both trainings run with two seeds (0 and 1) in each precision: the table's goal is checked on seed 0, and
two more columns give bf16 vs fp32 with seed 1 and fp32 seed 0 vs fp32 seed 1 (how far two fp32 runs
that differ only in their seed end apart: the spread any change of the arithmetic has to be read against).
3. Stylised images: the fp32-trained style network run in bf16 vs fp32 on the content photos at 256^2
   and 512^2; goal: PSNR >= 35 dB.
4. The optimisation baseline: 200 L-BFGS evaluations of the style loss at 128^2 with the loss network
   in bf16 vs fp32; goal: final losses within 2 %.

Prints a table and writes the numbers to ``--out``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch


SEEDS = (0, 1)


def _key(prec: str, seed: int) -> str:
    return prec if seed == 0 else f"{prec}_seed{seed}"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def heldout_loss(model, loss_fn, batch) -> float:
    model.eval()
    with torch.no_grad():
        total, _ = loss_fn(model, batch)
    model.train()
    return float(total)


def _last50(hist) -> float:
    """Mean training loss of the last 50 steps (the histories log every step)."""
    tail = hist["total"][-50:]
    return sum(tail) / len(tail)


def sr_check(steps: int, tmp: Path, recipe_name: str = "paper") -> dict:
    from perceptlib.config import PAPER_SR, for_mode, recipe
    from perceptlib.data import image_paths
    from perceptlib.sr import build_sr_data, build_sr_loss, build_sr_model
    from perceptlib.train import train

    out = {}
    base = dataclasses.replace(recipe(for_mode(PAPER_SR, "cpu"), recipe_name), steps=steps, checkpoint_every=steps,
                               log_every=1, device="cpu")
    held = build_sr_data(dataclasses.replace(base, seed=1), image_paths("set14") + image_paths("bsd100"))
    lr, hr = torch.utils.data.default_collate([held[i] for i in range(64)])
    for seed in SEEDS:
        for prec in ("off", "bf16"):
            cfg = dataclasses.replace(base, precision=prec, seed=seed)
            model, loss = build_sr_model(cfg), build_sr_loss(cfg)
            t = time.perf_counter()
            hist = train(model, loss, build_sr_data(cfg), cfg, tmp / f"sr_{prec}_{seed}", resume=False, progress=False)
            out[_key(prec, seed)] = {"seconds": time.perf_counter() - t, "train_last50": _last50(hist),
                                     "heldout": heldout_loss(model, loss, (lr, hr)), "curve": hist["total"][::10]}
    return out


def style_check(steps: int, tmp: Path, recipe_name: str = "paper", seeds: tuple[int, ...] = SEEDS
                ) -> tuple[dict, torch.nn.Module]:
    from perceptlib.config import PAPER_STYLE, for_mode, recipe
    from perceptlib.data import image_paths
    from perceptlib.images import load_image
    from perceptlib.speed import square_crop
    from perceptlib.style import StyleLoss, build_style_loss, load_style, train_style

    out, nets = {}, {}
    base = dataclasses.replace(recipe(for_mode(PAPER_STYLE, "cpu"), recipe_name), steps=steps,
                               checkpoint_every=steps, log_every=1, device="cpu")
    style = [p for p in image_paths("styles") if p.stem == "starry_night"][0]
    held = [load_image(p) for p in image_paths("content")] + [load_image(p) for p in image_paths("set14")]
    photos = torch.stack([square_crop(p, 128) for p in held])
    loss = StyleLoss(build_style_loss(base, style))
    for seed in seeds:
        for prec in ("off", "bf16"):
            cfg = dataclasses.replace(base, precision=prec, seed=seed)
            t = time.perf_counter()
            hist = train_style(cfg, style, tmp / f"style_{prec}_{seed}", resume=False, progress=False)
            nets[_key(prec, seed)] = load_style(tmp / f"style_{prec}_{seed}")
            out[_key(prec, seed)] = {"seconds": time.perf_counter() - t, "train_last50": _last50(hist),
                                     "heldout": heldout_loss(nets[_key(prec, seed)], loss, photos),
                                     "curve": hist["total"][::10]}
    return out, nets[_key("off", seeds[0])]


def stylize_check(net) -> dict:
    from perceptlib.data import image_paths
    from perceptlib.images import load_image
    from perceptlib.speed import square_crop
    from perceptlib.style import stylize

    out = {}
    for size in (256, 512):
        vals = []
        for p in image_paths("content"):
            img = square_crop(load_image(p), size)
            vals.append(psnr(stylize(net, img, precision="bf16"), stylize(net, img, precision="off")))
        out[str(size)] = {"min_psnr": min(vals), "mean_psnr": sum(vals) / len(vals)}
    return out


def lbfgs_check(steps: int = 200) -> dict:
    from perceptlib.config import PAPER_STYLE, for_mode
    from perceptlib.data import image_paths
    from perceptlib.images import load_image
    from perceptlib.speed import square_crop
    from perceptlib.style import optimise_style

    cfg = dataclasses.replace(for_mode(PAPER_STYLE, "cpu"), device="cpu")
    style = [p for p in image_paths("styles") if p.stem == "starry_night"][0]
    content = square_crop(load_image(image_paths("content")[0]), 128)
    out = {}
    for prec in ("off", "bf16"):
        t = time.perf_counter()
        rec = optimise_style(content, style, cfg, steps=steps, progress=False, precision=prec)
        out[prec] = {"seconds": time.perf_counter() - t, "final": rec.final["total"]}
    return out


def main(argv: list[str] | None = None) -> int:
    from perceptlib.precision import bf16_supported, describe_machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sr-steps", type=int, default=500)
    ap.add_argument("--style-steps", type=int, default=300)
    ap.add_argument("--sr-recipe", choices=("paper", "impl"), default="paper")
    ap.add_argument("--style-recipe", choices=("paper", "impl"), default="paper")
    ap.add_argument("--sr-only", action="store_true", help="run the SR check alone")
    ap.add_argument("--style-only", action="store_true",
                    help="run the style check alone with --seeds, plus the seeds of --with, and compare the means")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="seeds of --style-only")
    ap.add_argument("--with", dest="with_", default=None, metavar="JSON",
                    help="--style-only: also use the style runs of this earlier output (same recipe and steps)")
    ap.add_argument("--out", default="results/precision_check.json")
    args = ap.parse_args(argv)
    if not bf16_supported("cpu"):
        print("this CPU has no native bf16 (torch.ops.mkldnn._is_mkldnn_bf16_supported() is False): "
              "precision 'auto' runs fp32 here, nothing to compare")
        return 0
    machine = describe_machine("cpu")
    print(f"machine: {machine}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if args.style_only:
            style, _ = style_check(args.style_steps, tmp, args.style_recipe, tuple(args.seeds))
            return _report_style_seeds(machine, args, style)
        sr = sr_check(args.sr_steps, tmp, args.sr_recipe)
        if args.sr_only:
            return _report_sr_only(machine, args, sr)
        style, net = style_check(args.style_steps, tmp, args.style_recipe)
    res = {"machine": machine, "sr_x4_feat": {"steps": args.sr_steps, "recipe": args.sr_recipe, **sr},
           "style": {"steps": args.style_steps, "recipe": args.style_recipe, **style},
           "stylize_bf16_vs_fp32": stylize_check(net),
           "lbfgs_200": lbfgs_check()}

    def rel(d: dict, key: str, a: str = "bf16", b: str = "off") -> float:
        return abs(d[a][key] - d[b][key]) / abs(d[b][key])

    def seed_rel(d: dict, key: str) -> float:  # bf16 vs fp32 with the second seed
        return rel(d, key, "bf16_seed1", "off_seed1")

    def noise(d: dict, key: str) -> float:  # fp32 seed 0 vs fp32 seed 1: the run-to-run spread
        return rel(d, key, "off_seed1", "off")

    rows = [
        ("SR x4 l_feat held-out loss", sr["off"]["heldout"], sr["bf16"]["heldout"], rel(sr, "heldout"), 0.03),
        ("SR x4 l_feat last-50-step loss", sr["off"]["train_last50"], sr["bf16"]["train_last50"],
         rel(sr, "train_last50"), 0.03),
        ("style held-out loss", style["off"]["heldout"], style["bf16"]["heldout"], rel(style, "heldout"), 0.03),
        ("style last-50-step loss", style["off"]["train_last50"], style["bf16"]["train_last50"],
         rel(style, "train_last50"), 0.03),
        ("L-BFGS 200 evaluations, final loss", res["lbfgs_200"]["off"]["final"], res["lbfgs_200"]["bf16"]["final"],
         rel(res["lbfgs_200"], "final"), 0.02),
    ]
    print(f"\n{'check (seed 0)':<38} {'fp32':>11} {'bf16':>11} {'rel diff':>9} {'goal':>6}  ok   "
          f"seed 1: bf16 vs fp32 | fp32 seed 0 vs 1")
    ok_all = True
    spread = {"SR x4 l_feat held-out loss": (seed_rel(sr, "heldout"), noise(sr, "heldout")),
              "SR x4 l_feat last-50-step loss": (seed_rel(sr, "train_last50"), noise(sr, "train_last50")),
              "style held-out loss": (seed_rel(style, "heldout"), noise(style, "heldout")),
              "style last-50-step loss": (seed_rel(style, "train_last50"), noise(style, "train_last50"))}
    for name, a, b, r, goal in rows:
        ok = r <= goal
        ok_all &= ok
        extra = f"   {100 * spread[name][0]:>6.2f}% | {100 * spread[name][1]:>6.2f}%" if name in spread else ""
        print(f"{name:<38} {a:>11.4g} {b:>11.4g} {100 * r:>8.2f}% {100 * goal:>5.0f}%  {'yes' if ok else 'NO '}"
              + extra)
    res["spread"] = {k: {"bf16_vs_fp32_seed1": v[0], "fp32_seed0_vs_seed1": v[1]} for k, v in spread.items()}
    for size, v in res["stylize_bf16_vs_fp32"].items():
        ok = v["min_psnr"] >= 35
        ok_all &= ok
        print(f"{'stylise ' + size + '^2, bf16 vs fp32 PSNR (min)':<38} {'':>11} {v['min_psnr']:>9.1f}dB {'':>9} "
              f"{'35dB':>6}  {'yes' if ok else 'NO'}")
    for name, d in (("SR", sr), ("style", style), ("L-BFGS", res["lbfgs_200"])):
        print(f"{name} wall time: fp32 {d['off']['seconds']:.0f} s, bf16 {d['bf16']['seconds']:.0f} s "
              f"({d['off']['seconds'] / d['bf16']['seconds']:.2f}x)")
    res["rows"] = [dict(check=n, fp32=a, bf16=b, rel_diff=r, goal=g) for n, a, b, r, g in rows]
    res["all_ok"] = bool(ok_all)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}; all checks {'pass' if ok_all else 'DO NOT pass'}")
    return 0


def _rel(d: dict, key: str, a: str, b: str) -> float:
    return abs(d[a][key] - d[b][key]) / abs(d[b][key])


def _report_sr_only(machine: dict, args, sr: dict) -> int:
    """Print and write the SR check alone (goal on seed 0; seed 1 and the fp32 seed spread beside it)."""
    print(f"\nSR x4 l_feat, recipe {args.sr_recipe}, {args.sr_steps} steps")
    print(f"{'check':<22} {'fp32':>11} {'bf16':>11} {'rel diff':>9} {'goal':>5}  ok   seed 1: bf16 vs fp32 | "
          f"fp32 seed 0 vs 1")
    rows, ok_all = [], True
    for key, name in (("heldout", "held-out loss"), ("train_last50", "last-50-step loss")):
        r = _rel(sr, key, "bf16", "off")
        ok = r <= 0.03
        ok_all &= ok
        r1, spread = _rel(sr, key, "bf16_seed1", "off_seed1"), _rel(sr, key, "off_seed1", "off")
        rows.append(dict(check=name, fp32=sr["off"][key], bf16=sr["bf16"][key], rel_diff=r, goal=0.03,
                         bf16_vs_fp32_seed1=r1, fp32_seed0_vs_seed1=spread))
        print(f"{name:<22} {sr['off'][key]:>11.4g} {sr['bf16'][key]:>11.4g} {100 * r:>8.2f}% {3:>4}%  "
              f"{'yes' if ok else 'NO '}   {100 * r1:>6.2f}% | {100 * spread:>6.2f}%")
    print(f"wall time: fp32 {sr['off']['seconds']:.0f} s, bf16 {sr['bf16']['seconds']:.0f} s "
          f"({sr['off']['seconds'] / sr['bf16']['seconds']:.2f}x)")
    res = {"machine": machine, "sr_x4_feat": {"steps": args.sr_steps, "recipe": args.sr_recipe, **sr}, "rows": rows,
           "all_ok": bool(ok_all)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}; the SR check {'passes' if ok_all else 'does NOT pass'}")
    return 0


def _report_style_seeds(machine: dict, args, style: dict) -> int:
    """The style check over several seeds: per seed bf16 vs fp32, and the mean over seeds of each precision
    (a change of arithmetic moves a chaotic training as far as a change of seed does, so the goal is read on
    the means, against the standard error of their difference)."""
    runs = dict(style)
    if args.with_:
        old = json.loads(Path(args.with_).read_text())["style"]
        if (old.get("recipe", "paper"), old["steps"]) != (args.style_recipe, args.style_steps):
            raise SystemExit(f"{args.with_}: recipe/steps {old.get('recipe')}/{old['steps']} differ from "
                             f"{args.style_recipe}/{args.style_steps}")
        runs = {**{k: v for k, v in old.items() if isinstance(v, dict)}, **runs}
    seeds = sorted({0 if k in ("off", "bf16") else int(k.split("seed")[1]) for k in runs})
    seeds = [s for s in seeds if _key("off", s) in runs and _key("bf16", s) in runs]
    print(f"\nstyle, recipe {args.style_recipe}, {args.style_steps} steps, seeds {seeds}")
    res: dict = {"machine": machine, "style": {"steps": args.style_steps, "recipe": args.style_recipe, **runs},
                 "seeds": seeds}
    ok_all = True
    for key, name in (("heldout", "held-out loss"), ("train_last50", "last-50-step loss")):
        f = torch.tensor([runs[_key("off", s)][key] for s in seeds], dtype=torch.float64)
        b = torch.tensor([runs[_key("bf16", s)][key] for s in seeds], dtype=torch.float64)
        rel_mean = float((b.mean() - f.mean()).abs() / f.mean())
        se = float(((f.var() + b.var()) / len(seeds)).sqrt() / f.mean())  # s.e. of the difference of means
        paired = [float((bb - ff).abs() / ff) for ff, bb in zip(f, b)]
        ok = rel_mean <= 0.03
        ok_all &= ok
        print(f"{name:<18} per seed bf16 vs fp32: " + ", ".join(f"{100 * p:.1f}%" for p in paired)
              + f"; means fp32 {float(f.mean()):.4g}, bf16 {float(b.mean()):.4g}: {100 * rel_mean:.2f}% "
              f"(s.e. {100 * se:.1f}%; fp32 seed-to-seed sd {100 * float(f.std() / f.mean()):.1f}%), goal 3%: "
              + ("yes" if ok else "NO"))
        res[key] = {"per_seed_rel_diff": paired, "fp32_mean": float(f.mean()), "bf16_mean": float(b.mean()),
                    "rel_diff_of_means": rel_mean, "se_of_difference": se,
                    "fp32_seed_sd": float(f.std() / f.mean()), "ok": ok}
    res["all_ok"] = bool(ok_all)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}; the style check over {len(seeds)} seeds {'passes' if ok_all else 'does NOT pass'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
