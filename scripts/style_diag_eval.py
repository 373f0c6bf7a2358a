"""Score the style ablation networks the way the paper's Fig. 5 does: L-BFGS evaluations of the optimisation
baseline (white noise, same loss) needed to reach each network's loss on the 5 'content' photos (never trained on).

Run:  python scripts/style_diag_eval.py [RUN_DIR ...] [--size 256] [--max-steps 300] [--goal 50] [--out FILE]

Default runs: every folder with a model.pt under results/style_diagnostics, plus the committed CPU Starry Night
network results/style_starry_night_cpu_instance_lr5e-4. Writes ``--out`` (default
results/style_diagnostics/eval.json): per run, the step, the per-photo network losses and iteration counts.
Scores at other sizes than 256² go to results/style_fig5_by_size/<run folder name>_<size>.json (e.g.
``python scripts/style_diag_eval.py results/style_starry_night --size 512 --max-steps 200
--out results/style_fig5_by_size/style_starry_night_512.json``), where notebook 03 reads them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from perceptlib.config import config_from_dict
    from perceptlib.data import image_paths
    from perceptlib.images import load_image
    from perceptlib.precision import describe_machine
    from perceptlib.style import iterations_matching, load_style, style_of

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--out", default="results/style_diagnostics/eval.json")
    ap.add_argument("--goal", type=int, default=50,
                    help="also run to this many evaluations and keep the loss reached there (the loss a network "
                         "worth that many must reach; the paper's Fig. 5: 50-100); 0: stop at the network's loss")
    args = ap.parse_args(argv)
    runs = [Path(r) for r in args.runs] or (
        sorted(d for d in Path("results/style_diagnostics").iterdir() if (d / "model.pt").is_file())
        + [Path("results/style_starry_night_cpu_instance_lr5e-4")])
    photos = {p.stem: load_image(p) for p in image_paths("content")}
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.is_file() else {}
    res.update({"size": args.size, "max_steps": args.max_steps, "photos": list(photos), "precision": "fp32"})
    res.setdefault("runs", {})
    for run in runs:
        net = load_style(run)
        cfg = config_from_dict({**net.train_config, "device": "cpu"})
        _, style = style_of(run)
        t = time.perf_counter()
        r = iterations_matching(net, list(photos.values()), style, cfg, size=args.size, max_steps=args.max_steps,
                                goal=args.goal or None)
        res["runs"][str(run)] = {"step": net.train_step, **r, "seconds": time.perf_counter() - t,
                                 "machine": describe_machine("cpu")["name"]}
        print(f"{run} (step {net.train_step}): worth {r['iterations_matching_network']:.1f} evaluations "
              f"(min {r['min']}, all reached: {r['all_reached']}); per photo "
              + ", ".join(str(p["iterations"]) for p in r["photos"])
              + (f"; best loss after {r['goal']} evaluations / network's: {r['goal_ratio']:.3f}"
                 if r.get("goal_ratio") else ""),
              flush=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
