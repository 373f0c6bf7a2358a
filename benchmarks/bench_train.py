"""Training and inference speed of perceptlib vs the pytorch/examples ``fast_neural_style`` recipe.

Run:  python benchmarks/bench_train.py [--repeats 9] [--warmup 2] [--threads N] [--no-data]

Timed in one process, round-robin (every implementation once per round, order rotated), medians:

- ``style step``: one training step (forward, loss, backward, Adam) at 128^2, batch 4.
  ours: perceptlib's TransformerNet (the paper's: reflection pad 40, unpadded residual blocks, batch
  norm, transposed convs) + PerceptualLoss (content relu3_3 + Grams at relu1_2/2_2/3_3/4_3, TV; the
  truncated VGG, the photos' features under no_grad, stopping at relu3_3).
  reference: pytorch/examples' TransformerNet (reflection-padded convs, instance norm, nearest x2 +
  conv upsampling) and its Vgg16 (four slices of torchvision's features to relu4_3), content 1e5 at
  relu2_2, style 1e10 (MSE of Grams), two full VGG passes (output and photos), fp32.
- ``sr step``: one SR x4 training step, 96^2 HR patches, batch 4: perceptlib's SRNet with l_feat at
  relu2_2. ours: truncated VGG, target under no_grad; reference: the same SRNet with the
  pytorch/examples loss pattern (VGG to relu4_3 for output and target, target not under no_grad).
- ``stylize N``: one image N x N through the trained-network path (eval, no grad), N = 256, 512, 1024.
- ``opt eval 256``: one evaluation (loss + gradient w.r.t. the image) of the optimisation baseline
  at 256^2 with cached targets; reference: the pytorch/examples Vgg16 slices to relu4_3.

The pytorch/examples code (TransformerNet, Vgg16, gram_matrix, normalize_batch) is copied in _reference.py.
Every network has random weights (speed does not depend on them). ours runs in fp32 and, on machines
where :func:`perceptlib.precision.bf16_supported`, in bf16 autocast; "default" is what
``precision="auto"`` picks here. GFLOP/s come from ``torch.utils.flop_counter`` (one pass, fp32).
The data-loading line times building one batch from the real training photos (StyleDataset at 128^2,
SRPatchDataset at 96^2 with the in-memory cache) against the step.

The last line is ``speedup style=<x> sr=<y> stylize512=<z> bf16=<yes|no>``: reference / ours at the default
precision, the median of the per-round ratios (each round times both back to back, so a burst of load from
another process affects both; the table's columns are plain medians).
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from perceptlib.losses import PerceptualLoss
from perceptlib.nets import SRNet, TransformerNet
from perceptlib.precision import autocast, bf16_supported, describe_machine, resolve_precision

try:  # run as a script: its folder is on sys.path
    from _reference import RefTransformerNet, RefVgg16, ref_gram, ref_normalize_batch
except ModuleNotFoundError:  # imported as benchmarks.bench_train (python -m, tests) from the repo root
    from benchmarks._reference import RefTransformerNet, RefVgg16, ref_gram, ref_normalize_batch

STYLE_LAYERS = {"relu1_2": 1 / 64**2, "relu2_2": 1 / 128**2, "relu3_3": 1 / 256**2, "relu4_3": 1 / 512**2}


# --- the timed work ------------------------------------------------------------------------------------------
def style_step_ref(model: nn.Module, vgg: RefVgg16, opt, x255: Tensor, gram_style: list[Tensor]) -> None:
    opt.zero_grad()
    y = model(x255)
    y, x = ref_normalize_batch(y), ref_normalize_batch(x255)
    features_y, features_x = vgg(y), vgg(x)
    content_loss = 1e5 * F.mse_loss(features_y.relu2_2, features_x.relu2_2)
    style_loss = 0.0
    for ft_y, gm_s in zip(features_y, gram_style):
        style_loss = style_loss + F.mse_loss(ref_gram(ft_y), gm_s[: len(x255), :, :])
    (content_loss + 1e10 * style_loss).backward()
    opt.step()


def step_ours(model: nn.Module, loss: PerceptualLoss, opt, inp: Tensor, target: Tensor, used: str) -> None:
    opt.zero_grad(set_to_none=True)
    with autocast(used, "cpu"):
        total = loss(model(inp), target)
    total.backward()
    opt.step()


def sr_step_ref(model: nn.Module, vgg: RefVgg16, opt, lr: Tensor, hr: Tensor) -> None:
    opt.zero_grad()
    y = model(lr)
    fy, fx = vgg(ref_normalize_batch(y * 255)), vgg(ref_normalize_batch(hr * 255))
    F.mse_loss(fy.relu2_2, fx.relu2_2).backward()
    opt.step()


def stylize_ours(model: nn.Module, img: Tensor, used: str) -> None:
    with torch.no_grad(), autocast(used, "cpu"):
        model(img)


def stylize_ref(model: nn.Module, img255: Tensor) -> None:
    with torch.no_grad():
        model(img255).clamp(0, 255)


def opt_eval_ours(loss: PerceptualLoss, x: Tensor, used: str) -> None:
    x.grad = None
    with autocast(used, "cpu"):
        total = loss(x.clamp(0, 1))
    total.backward()


def opt_eval_ref(vgg: RefVgg16, x: Tensor, content: Tensor, grams: list[Tensor]) -> None:
    x.grad = None
    f = vgg(ref_normalize_batch(x.clamp(0, 1) * 255))
    loss = F.mse_loss(f.relu2_2, content) + sum(F.mse_loss(ref_gram(a), g) for a, g in zip(f, grams))
    loss.backward()


def flops_of(fn: Callable[[], None]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def data_ms(repeats: int) -> dict[str, float]:
    """Median ms to build one batch from the real photos (as train() does without workers)."""
    from perceptlib.config import PAPER_SR, PAPER_STYLE, for_mode
    from perceptlib.sr import build_sr_data, training_images
    from perceptlib.style import StyleDataset
    from perceptlib.train import IndexSampler, _collate

    out = {}
    style_cfg = for_mode(PAPER_STYLE, "cpu")
    sets = {"style": StyleDataset(training_images("train"), style_cfg.image_size, seed=0),
            "sr": build_sr_data(for_mode(PAPER_SR, "cpu"))}
    for name, ds in sets.items():
        sampler = IndexSampler(len(ds), 4, 0)
        for b in range(200):  # decode every photo once (ImageCache), as after the first epoch's visits
            if name == "sr":
                ds.items[b % len(ds.items)]
        ts = []
        for b in range(repeats * 5):
            t = time.perf_counter()
            _collate([ds[i] for i in sampler.indices(b)])
            ts.append((time.perf_counter() - t) * 1e3)
        out[name] = statistics.median(ts)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--no-data", action="store_true", help="skip the data-loading measurement (needs the photos)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    has_bf16 = bf16_supported("cpu")
    default = resolve_precision("auto", "cpu")
    precisions = ["fp32"] + (["bf16"] if has_bf16 else [])
    machine = describe_machine("cpu")
    print(f"machine: {machine['name']}, {machine['threads']} threads, torch {machine['torch']}, "
          f"bf16 supported: {has_bf16} (precision='auto' -> {default})")

    g = torch.Generator().manual_seed(0)
    photos = torch.rand(4, 3, 128, 128, generator=g)
    style_img = torch.rand(1, 3, 256, 256, generator=g)
    hr = torch.rand(4, 3, 96, 96, generator=g)
    lr = F.avg_pool2d(hr, 4)
    imgs = {n: torch.rand(1, 3, n, n, generator=g) for n in (256, 512, 1024)}

    ref_vgg = RefVgg16()
    ref_net = RefTransformerNet()
    ref_opt = torch.optim.Adam(ref_net.parameters(), 1e-3)
    with torch.no_grad():
        gram_style = [ref_gram(f).repeat(4, 1, 1) for f in ref_vgg(ref_normalize_batch(style_img * 255))]
    our_net = TransformerNet()
    our_opt = torch.optim.Adam(our_net.parameters(), 1e-3)
    style_loss = PerceptualLoss(layers={"relu3_3": 1.0}, style_layers=STYLE_LAYERS, style_weight=5.0,
                                tv_weight=0.065, weights=None)
    style_loss.set_style(style_img)
    sr_ref, sr_ours = SRNet(4), SRNet(4)
    sr_ref_opt, sr_ours_opt = torch.optim.Adam(sr_ref.parameters(), 1e-3), torch.optim.Adam(sr_ours.parameters(), 1e-3)
    sr_loss = PerceptualLoss(layers={"relu2_2": 1.0}, weights=None)
    opt_loss = PerceptualLoss(layers={"relu3_3": 1.0}, style_layers=STYLE_LAYERS, style_weight=5.0, tv_weight=0.065,
                              weights=None)
    opt_loss.set_style(style_img)
    content256 = torch.rand(1, 3, 256, 256, generator=g)
    opt_loss.set_target(content256)
    x_opt = torch.rand(1, 3, 256, 256, generator=g).requires_grad_(True)
    with torch.no_grad():
        fc = ref_vgg(ref_normalize_batch(content256 * 255))
        ref_opt_content, ref_opt_grams = fc.relu2_2, [ref_gram(f) for f in ref_vgg(ref_normalize_batch(style_img * 255))]
    ref_net_eval, our_net_eval = RefTransformerNet().eval(), TransformerNet().eval()

    # work: name -> {impl: fn}
    work: dict[str, dict[str, Callable[[], None]]] = {
        "style step": {"reference fp32": lambda: style_step_ref(ref_net, ref_vgg, ref_opt, photos * 255, gram_style)},
        "sr step": {"reference fp32": lambda: sr_step_ref(sr_ref, ref_vgg, sr_ref_opt, lr, hr)},
        **{f"stylize {n}": {"reference fp32": (lambda n=n: stylize_ref(ref_net_eval, imgs[n] * 255))}
           for n in imgs},
        "opt eval 256": {"reference fp32": lambda: opt_eval_ref(ref_vgg, x_opt, ref_opt_content, ref_opt_grams)},
    }
    for p in precisions:
        work["style step"][f"ours {p}"] = lambda p=p: step_ours(our_net, style_loss, our_opt, photos, photos, p)
        work["sr step"][f"ours {p}"] = lambda p=p: step_ours(sr_ours, sr_loss, sr_ours_opt, lr, hr, p)
        for n in imgs:
            work[f"stylize {n}"][f"ours {p}"] = lambda p=p, n=n: stylize_ours(our_net_eval, imgs[n], p)
        work["opt eval 256"][f"ours {p}"] = lambda p=p: opt_eval_ours(opt_loss, x_opt, p)

    flops = {(w, i): flops_of(fn) for w, impls in work.items() for i, fn in impls.items() if "fp32" in i}
    times: dict[tuple[str, str], list[float]] = {(w, i): [] for w, impls in work.items() for i in impls}
    for r in range(args.warmup + args.repeats):
        for w, impls in work.items():
            names = list(impls)
            names = names[r % len(names):] + names[: r % len(names)]
            for i in names:
                t = time.perf_counter()
                impls[i]()
                if r >= args.warmup:
                    times[(w, i)].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}

    print(f"\n{'work':<14}{'implementation':<17}{'median ms':>11}{'min ms':>9}{'GFLOP':>8}{'GFLOP/s':>9}"
          f"{'ref / this':>12}")
    for (w, i), m in med.items():
        fl = flops.get((w, i.replace("bf16", "fp32")), float("nan"))
        print(f"{w:<14}{i:<17}{1e3 * m:>11.1f}{1e3 * min(times[(w, i)]):>9.1f}{fl / 1e9:>8.1f}"
              f"{fl / 1e9 / m:>9.1f}{med[(w, 'reference fp32')] / m:>11.2f}x")
    if not args.no_data:
        try:
            d = data_ms(args.repeats)
            for name, key in (("style", "style step"), ("sr", "sr step")):
                step_ms = 1e3 * med[(key, f"ours {default}")]
                print(f"data loading, {name} batch (ours, in-process): {d[name]:.1f} ms = "
                      f"{100 * d[name] / step_ms:.1f} % of the {default} step ({step_ms:.0f} ms)")
        except Exception as e:  # the photos are not fetched: say so, keep the speedup line last
            print(f"data loading: not measured ({type(e).__name__}: {e}); run `python -m perceptlib data fetch`")

    def speedup(w: str) -> float:  # median of per-round ratios: robust to a load spike in one round
        return statistics.median(r / o for r, o in zip(times[(w, "reference fp32")], times[(w, f"ours {default}")]))

    print("reference / ours (median of per-round ratios): " + ", ".join(
        f"{w} {speedup(w):.2f}" for w in work))

    print(f"speedup style={speedup('style step'):.2f} sr={speedup('sr step'):.2f} "
          f"stylize512={speedup('stylize 512'):.2f} bf16={'yes' if default == 'bf16' else 'no'}")


if __name__ == "__main__":
    main()
