"""Forward+backward time of perceptlib's PerceptualLoss vs a typical re-implementation.

Run:  python benchmarks/bench_loss.py [--batch 4] [--size 256] [--repeats 7] [--device cpu|cuda]
                                      [--dtype float32|bfloat16] [--channels-last]

Measures one ``loss(pred, target)`` + ``backward()`` (gradient w.r.t. ``pred`` only, as in training
the image-transformation network) for two configurations of Johnson et al. (2016):

  sr:    feature loss at relu2_2;
  style: content relu3_3 + style Grams at relu1_2/2_2/3_3/4_3 (style image's Grams cached),
         style_weight 1e5, tv_weight 1e-6.

"ours" is perceptlib.PerceptualLoss (truncated VGG, target under no_grad). "reference" follows
pytorch/examples fast_neural_style (its Vgg16, copied in _reference.py): torchvision vgg16 features
run in four slices to relu4_3 for the prediction and, in a second full pass without no_grad, for
the target; its parameters are frozen, as in that script. "ref-unfrozen" is the same with the VGG
left trainable (a common slip). All use the same ImageNet VGG-16 weights
(perceptlib.weights.resolve_vgg16("torchvision")). Timings alternate between implementations in
one process after warm-up; median and min over ``--repeats`` are printed, plus the peak memory
above baseline of one step (RSS on CPU, CUDA allocator peak on GPU). The last line is
``speedup sr=<x> style=<y>`` (reference / ours medians).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceptlib.losses import PerceptualLoss

try:  # run as a script: its folder is on sys.path
    from _reference import IMAGENET_MEAN, IMAGENET_STD, RefVgg16, ref_gram
except ModuleNotFoundError:  # imported as benchmarks.bench_loss (python -m, tests) from the repo root
    from benchmarks._reference import IMAGENET_MEAN, IMAGENET_STD, RefVgg16, ref_gram

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
STYLE_WEIGHT, TV_WEIGHT = 1e5, 1e-6


class RefLoss(nn.Module):
    """The training-loop loss of pytorch/examples, made to compute exactly what ours computes."""

    def __init__(self, vgg: RefVgg16, content: str, style_image: Tensor | None = None) -> None:
        super().__init__()
        self.vgg, self.content = vgg, content
        dev = next(vgg.parameters()).device
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, device=dev).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, device=dev).view(1, 3, 1, 1))
        self.gm_s: list[Tensor] = []
        if style_image is not None:  # as in pytorch/examples, the style Grams are computed once
            with torch.no_grad():
                self.gm_s = [ref_gram(f) for f in self.vgg(self.normalize_batch(style_image))]

    def normalize_batch(self, x: Tensor) -> Tensor:  # inputs in [0, 1] here instead of 0-255
        return (x - self.mean) / self.std

    def forward(self, y: Tensor, x: Tensor) -> Tensor:
        # Faithful to pytorch/examples: `features_y = vgg(y); features_x = vgg(x)` -- two separate
        # full passes to relu4_3, the one of the target x *not* under no_grad.
        features_y = self.vgg(self.normalize_batch(y))
        features_x = self.vgg(self.normalize_batch(x))
        c = self.content
        loss = F.mse_loss(getattr(features_y, c).float(), getattr(features_x, c).float())
        if self.gm_s:
            style = 0.0
            for ft_y, gm_s in zip(features_y, self.gm_s):
                # pytorch/examples uses mse_loss(gm_y, gm_s), i.e. a mean over (N, C, C); summing over
                # (C, C) instead only rescales it (same cost) and matches the paper's/our Eq. 4.
                style = style + (ref_gram(ft_y) - gm_s).square().sum(dim=(1, 2)).mean()
            loss = loss + STYLE_WEIGHT * style
            yf = y.float()
            tv = (yf[:, :, 1:, :] - yf[:, :, :-1, :]).square().sum(dim=(1, 2, 3)) \
                + (yf[:, :, :, 1:] - yf[:, :, :, :-1]).square().sum(dim=(1, 2, 3))
            loss = loss + TV_WEIGHT * tv.mean()
        return loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_mib(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))


def peak_mib(step: Callable[[], None], device: torch.device) -> float:
    """Peak memory of one step above what was in use before it (CUDA allocator or process RSS)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:  # Linux: return freed heap to the OS, then reset VmHWM via clear_refs
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _proc_mib("VmRSS")
        step()
        return _proc_mib("VmHWM") - base
    except (OSError, StopIteration):
        return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--channels-last", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    bf16 = args.dtype == "bfloat16"
    if bf16 and device.type != "cuda":
        ap.error("--dtype bfloat16 (autocast) is only supported with --device cuda")
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    g = torch.Generator().manual_seed(0)
    shape = (args.batch, 3, args.size, args.size)
    target = torch.rand(shape, generator=g)
    pred0 = (target + 0.1 * torch.randn(shape, generator=g)).clamp(0, 1)
    style_img = torch.rand((1, 3, args.size, args.size), generator=g)
    target, pred0, style_img = (t.to(device).contiguous(memory_format=fmt) for t in (target, pred0, style_img))

    frozen = RefVgg16(False, pretrained=True).to(device=device, memory_format=fmt)
    unfrozen = RefVgg16(True, pretrained=True).to(device=device, memory_format=fmt)
    ours_sr = PerceptualLoss(layers={"relu2_2": 1.0}).to(device=device, memory_format=fmt)
    ours_st = PerceptualLoss(layers={"relu3_3": 1.0}, style_layers=STYLE_LAYERS, style_weight=STYLE_WEIGHT,
                             tv_weight=TV_WEIGHT).to(device=device, memory_format=fmt)
    with autocast():  # style Grams cached once, with the same device/precision as the timed loss
        ours_st.set_style(style_img)
        impls: dict[str, dict[str, nn.Module]] = {
            "sr": {"ours": ours_sr, "reference": RefLoss(frozen, "relu2_2"),
                   "ref-unfrozen": RefLoss(unfrozen, "relu2_2")},
            "style": {"ours": ours_st, "reference": RefLoss(frozen, "relu3_3", style_img),
                      "ref-unfrozen": RefLoss(unfrozen, "relu3_3", style_img)},
        }

    pred = pred0.clone().requires_grad_(True)

    def step(loss_fn: nn.Module) -> Tensor:
        pred.grad = None
        for p in loss_fn.parameters():  # the unfrozen VGG: grads dropped each step, as zero_grad would
            p.grad = None
        with autocast():
            loss = loss_fn(pred, target)
        loss.backward()
        return loss.detach()

    tol = 1e-4 if not bf16 and device.type == "cpu" else (1e-3 if not bf16 else 3e-2)
    print(f"device={device} dtype={args.dtype} channels_last={args.channels_last} batch={args.batch} "
          f"size={args.size} repeats={args.repeats} threads={torch.get_num_threads()} torch={torch.__version__}")
    all_ok = True
    for cfg, fns in impls.items():
        vals, grads = {}, {}
        for n, f in fns.items():
            vals[n] = float(step(f))
            grads[n] = pred.grad.clone()
        rel = max(abs(v - vals["ours"]) / abs(vals["ours"]) for v in vals.values())
        grel = max(float((gr - grads["ours"]).norm() / grads["ours"].norm()) for gr in grads.values())
        ok = rel <= tol and grel <= 10 * tol
        all_ok &= ok
        print(f"check {cfg}: loss " + " ".join(f"{n}={v:.6g}" for n, v in vals.items())
              + f" max_rel_diff={rel:.2e} grad_rel_diff={grel:.2e} tol={tol:g} -> {'OK' if ok else 'MISMATCH'}")

    # wall ms and process CPU ms (all threads) per step; CPU time is less hit by other tenants.
    wall: dict[tuple[str, str], list[float]] = {(c, n): [] for c, fns in impls.items() for n in fns}
    cpu: dict[tuple[str, str], list[float]] = {k: [] for k in wall}
    for it in range(args.warmup + args.repeats):
        for cfg, fns in impls.items():
            names = list(fns)
            names = names[it % len(names):] + names[: it % len(names)]  # rotate order to spread drift
            for n in names:
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                step(fns[n])
                sync(device)
                if it >= args.warmup:
                    wall[(cfg, n)].append((time.perf_counter() - t0) * 1e3)
                    cpu[(cfg, n)].append((time.process_time() - c0) * 1e3)
    mem = {(c, n): peak_mib(lambda f=f: step(f), device) for c, fns in impls.items() for n, f in fns.items()}

    label = "GPU peak MiB" if device.type == "cuda" else "RSS peak MiB"
    print(f"\nmemory: peak of one step above the memory in use before it ({label.split()[0]}); "
          "vs ours: ratio of wall medians; cpu ms: median process CPU time")
    print(f"{'config':<8}{'implementation':<16}{'median ms':>11}{'min ms':>10}{'vs ours':>9}{'cpu ms':>10}{label:>14}")
    med = {k: statistics.median(v) for k, v in wall.items()}
    for (cfg, n), ts in wall.items():
        print(f"{cfg:<8}{n:<16}{med[(cfg, n)]:>11.1f}{min(ts):>10.1f}{med[(cfg, n)] / med[(cfg, 'ours')]:>8.2f}x"
              f"{statistics.median(cpu[(cfg, n)]):>10.1f}{mem[(cfg, n)]:>14.0f}")

    def paired(cfg: str, d: dict[tuple[str, str], list[float]]) -> float:
        return statistics.median(r / o for r, o in zip(d[(cfg, "reference")], d[(cfg, "ours")]))

    print("reference/ours, median of per-repeat ratios: " + " ".join(
        f"{c}: wall={paired(c, wall):.2f} cpu={paired(c, cpu):.2f}" for c in impls))
    sr = med[("sr", "reference")] / med[("sr", "ours")]
    st = med[("style", "reference")] / med[("style", "ours")]
    print(f"speedup sr={sr:.2f} style={st:.2f}")
    if not all_ok:
        raise SystemExit(1)  # after the speedup line, which stays last


if __name__ == "__main__":
    main()
