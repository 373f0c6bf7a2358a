"""Inference memory and speed of the style network: image size, tiles, backend and width.

Run:  python benchmarks/bench_deploy.py [--sizes 256 512 1024 2048 6000x4000] [--tile 512] [--repeats 3]
      [--channels 32 16] [--backends torch-fp32 ...] [--device cpu|cuda] [--threads N] [--json OUT]

Every case runs in a fresh Python process, so its peak memory is its own: the peak resident set size
(``VmHWM`` of ``/proc/self/status``) after building the network and running it ``1 + repeats`` times
on one random image; ``base`` is the resident size just before the first run (interpreter, torch,
onnxruntime, weights, the input), so ``peak - base`` is what inference itself took. On CUDA the peak
GPU memory (``torch.cuda.max_memory_allocated``, torch backend) is reported too. Times are medians
of ``repeats`` runs after one warm-up, for the whole image (tiles, blending and all), in ms.

1. ``size x {untiled, tiled}``: TransformerNet (32 channels, the paper's padding, instance norm),
   torch fp32; tiled = ``--tile`` px tiles, overlap 64 (:func:`perceptlib.deploy.run_tiled`).
2. ``size x backend x width``, untiled: ``torch fp32``, ``torch bf16`` (autocast; only where
   :func:`perceptlib.precision.bf16_supported`), the same two ``torch.compile``'d
   (``TorchNetwork(..., compile=True)``: ``torch-fp32-compiled``, ``torch-bf16-compiled`` in
   :data:`perceptlib.deploy.COMPILED_BF16_FORM`), ``onnxruntime fp32`` (the file from
   :func:`perceptlib.deploy.export_onnx`, exported once per width) x ``--channels`` -> ms, fps, peak MiB,
   and the arithmetic: ``GFLOP`` per image (:class:`torch.utils.flop_counter.FlopCounterMode` on the meta
   device, 2 FLOPs per multiply-add) and the ``GFLOP/s`` that rate sustains.
   ``compile s``: the compiled cases' first call (the compilation, with an empty inductor cache of its
   own) less one timed call; it is not in ms / fps, but its peak MiB includes the compiler's. ``--backends``
   picks some of them, or adds ``torch-bf16-autocast-compiled`` (the other bf16 form: fp32 weights, autocast
   inside the graph).

Weights are random (speed and memory do not depend on them). A case that fails (e.g. killed for
memory) is shown as ``failed`` and the rest go on. The last line is
``best at 512x512: <backend> c<width> <fps> fps (<GFLOP/s>; 20 fps needs <GFLOP/s>)`` (from table 2; ``none``
when 512 was not measured).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OVERLAP = 64
BACKENDS = ("torch-fp32", "torch-bf16", "torch-fp32-compiled", "torch-bf16-compiled", "onnxruntime")
EXTRA_BACKENDS = ("torch-bf16-autocast-compiled",)


def _status(key: str) -> float:
    """``VmHWM``/``VmRSS`` of this process in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(case: dict) -> dict:
    """One measurement in this process (called in the child)."""
    import torch

    from perceptlib.deploy import TorchNetwork, load_onnx, run_tiled, runner
    from perceptlib.nets import TransformerNet

    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    device = torch.device(case["device"])
    backend = case["backend"]
    if backend == "onnxruntime":
        net = load_onnx(case["onnx"], device=case["device"])
    else:
        torch.manual_seed(0)
        model = TransformerNet(channels=case["channels"], norm="instance").eval().to(device)
        if backend == "torch-bf16-autocast-compiled":
            runner.COMPILED_BF16_FORM = "autocast"
        net = TorchNetwork(model, precision="off" if backend.startswith("torch-fp32") else "bf16",
                           compile=backend.endswith("-compiled"))
    w, h = case["size"]
    x = torch.rand(1, 3, h, w)
    tile = case.get("tile") or 0

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        run_tiled(net, x, tile, OVERLAP, align=4)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1000

    base = _status("VmRSS")
    times = [once() for _ in range(1 + case["repeats"])]
    out = {"ms": statistics.median(times[1:]), "peak_mib": _status("VmHWM"), "base_mib": base}
    if backend.endswith("-compiled"):
        out["compile_s"] = (times[0] - out["ms"]) / 1000
    if device.type == "cuda" and case["backend"] != "onnxruntime":
        out["gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def network_gflop(channels: int, w: int, h: int) -> float:
    """GFLOP of one TransformerNet(channels, instance norm) forward pass on a ``w x h`` image, counted on
    the meta device (no memory, no time)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from perceptlib.nets import TransformerNet

    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        TransformerNet(channels=channels, norm="instance").eval()(torch.empty(1, 3, h, w))
    return counter.get_total_flops() / 1e9


def measure(case: dict, timeout: float, env: dict | None = None) -> dict:
    """``run_case`` in a fresh interpreter (environment ``env``, default this one's); ``{"error": ...}``
    when it fails."""
    cmd = [sys.executable, __file__, "--case", json.dumps(case)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout:.0f} s"}
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
        return {"error": f"exit {p.returncode}: {last[:80]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


def _row(cells: list, widths: list[int]) -> str:
    return "  ".join(str(c).rjust(n) if i else str(c).ljust(n) for i, (c, n) in enumerate(zip(cells, widths)))


def _fmt(r: dict, keys: tuple[str, ...]) -> list[str]:
    if "error" in r:
        return ["failed"] + [""] * (len(keys) - 1)
    return [f"{1000 / r['ms']:.2f}" if k == "fps" else f"{r[k]:.1f}" if k in r else "-" for k in keys]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["256", "512", "1024", "2048"], help="N (square) or WxH")
    ap.add_argument("--tile", type=int, default=512, help="tile size of the tiled cases (px)")
    ap.add_argument("--channels", nargs="+", type=int, default=[32, 16], help="TransformerNet widths of table 2")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS + EXTRA_BACKENDS, default=list(BACKENDS),
                    help="table 2 backends (default: all but the extra bf16 form; bf16 ones only where supported)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: torch's)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per case")
    ap.add_argument("--json", default=None, metavar="OUT", help="also write the results here")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0

    import torch

    from perceptlib.deploy import export_onnx
    from perceptlib.nets import TransformerNet
    from perceptlib.precision import bf16_supported, describe_machine

    sizes = [_size(s) for s in args.sizes]
    common = {"device": args.device, "repeats": args.repeats, "threads": args.threads}
    machine = describe_machine(args.device)
    print(f"bench_deploy: {machine['name']}, {args.device}, torch {machine['torch']}, "
          f"{args.threads or torch.get_num_threads()} threads, repeats {args.repeats}")
    results: dict = {"machine": machine, "args": vars(args), "tiles": [], "backends": []}

    print(f"\n1. TransformerNet c32, torch fp32: untiled vs {args.tile}-px tiles (overlap {OVERLAP})")
    widths = [11, 8, 10, 10, 10]
    print(_row(["size", "tiles", "ms", "peak MiB", "base MiB"], widths))
    for w, h in sizes:
        for tile in (0, args.tile):
            r = measure({**common, "size": (w, h), "backend": "torch-fp32", "channels": 32, "tile": tile}, args.timeout)
            results["tiles"].append({"size": [w, h], "tile": tile, **r})
            print(_row([f"{w}x{h}", tile or "-", *_fmt(r, ("ms", "peak_mib", "base_mib"))], widths))

    bf16 = bf16_supported(args.device)
    backends = [b for b in args.backends if bf16 or "bf16" not in b]
    if not bf16 and len(backends) < len(args.backends):
        print(f"\n(torch bf16 skipped: no native bf16 on {args.device})")
    print("\n2. untiled: size x backend x width")
    widths = [11, 28, 5, 10, 8, 8, 9, 10, 10]
    print(_row(["size", "backend", "c", "ms", "fps", "GFLOP", "GFLOP/s", "peak MiB", "compile s"], widths))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_files = {}
        for c in args.channels if "onnxruntime" in backends else ():
            torch.manual_seed(0)
            net = TransformerNet(channels=c, norm="instance").eval()
            onnx_files[c] = str(export_onnx(net, Path(tmp) / f"c{c}.onnx"))
        for w, h in sizes:
            gflop = {c: network_gflop(c, w, h) for c in args.channels}
            for backend in backends:
                for c in args.channels:
                    case = {**common, "size": (w, h), "backend": backend, "channels": c, "onnx": onnx_files.get(c)}
                    env = None
                    if backend.endswith("-compiled"):  # a cold compilation: an inductor cache of its own
                        cache = Path(tmp) / f"inductor_{backend}_c{c}_{w}x{h}"
                        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
                    r = measure(case, args.timeout, env=env)
                    if "error" not in r:
                        r = {**r, "gflop": gflop[c], "gflop_per_s": gflop[c] * 1000 / r["ms"]}
                    results["backends"].append({"size": [w, h], "backend": backend, "channels": c, **r})
                    print(_row([f"{w}x{h}", backend, c, *_fmt(r, ("ms", "fps", "gflop", "gflop_per_s", "peak_mib",
                                                                   "compile_s"))], widths))

    at512 = [r for r in results["backends"] if r["size"] == [512, 512] and "error" not in r]
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if at512:
        best = min(at512, key=lambda r: r["ms"])
        print(f"best at 512x512: {best['backend']} c{best['channels']} {1000 / best['ms']:.2f} fps "
              f"({best['gflop_per_s']:.0f} GFLOP/s; 20 fps needs {20 * best['gflop']:.0f} GFLOP/s)")
    else:
        print("best at 512x512: none (512 not measured)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
