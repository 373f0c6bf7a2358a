"""A tiny SR training run for the data-parallel tests: ``python -m torch.distributed.run ... ddp_worker.py OUT``.

Also imported by tests/test_distributed.py for the 1-process reference (same config, data and model).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from perceptlib.config import PAPER_SR, for_mode
from perceptlib.nets import SRNet
from perceptlib.sr import build_sr_loss
from perceptlib.train import train

# global batch 4: 2 per process with 2 processes. norm="none": with instance norm the conv biases before
# it get zero gradients (the norm removes them), i.e. float noise that Adam scales up to full steps, so those
# biases differ between any two summation orders (the outputs do not)
BASE = dataclasses.replace(
    for_mode(PAPER_SR, "quick"), scale=2, patch_size=12, batch_size=4, steps=6, checkpoint_every=2, log_every=2,
    loss="pixel", channels=4, blocks=1, norm="none", device="cpu", precision="off", lr=1e-2)


class PairSet(torch.utils.data.Dataset):
    """16 fixed (lr, hr) pairs: smooth random 12x12 HR images and their 2x2-mean LR."""

    def __init__(self, n: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        hr = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=12, mode="bilinear")
        self.hr, self.lr = hr, torch.nn.functional.avg_pool2d(hr, 2)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int):
        return self.lr[i], self.hr[i]


def tiny_model(cfg=BASE, seed: int = 0) -> SRNet:
    torch.manual_seed(seed)
    return SRNet(scale=2, channels=cfg.channels, blocks=cfg.blocks, norm=cfg.norm)


class SlowLoss:
    """The pixel loss, sleeping ``sleep`` s per call (so a run can be killed or time-limited mid-way)."""

    def __init__(self, cfg, sleep: float = 0.0) -> None:
        self.inner, self.sleep = build_sr_loss(cfg), sleep

    def __call__(self, model, batch):
        if self.sleep:
            time.sleep(self.sleep)
        return self.inner(model, batch)


def run(out, steps: int, sleep: float = 0.0, max_seconds: float | None = None, model_seed: int = 0, **changes):
    cfg = dataclasses.replace(BASE, steps=steps, **changes)
    model = tiny_model(cfg, model_seed)
    return model, train(model, SlowLoss(cfg, sleep), PairSet(), cfg, out, progress=False, max_seconds=max_seconds)


def cleanup_timing(delay_rank1: float, synchronize: bool) -> None:
    """Join the group, rank 1 sleeps ``delay_rank1`` s, both call ``cleanup``; prints each rank's wait in it."""
    import os
    import sys

    from perceptlib import distributed as pdist

    assert pdist.init(torch.device("cpu"))
    if pdist.rank() == 1:
        time.sleep(delay_rank1)
    t0 = time.perf_counter()
    pdist.cleanup(synchronize=synchronize)
    sys.stdout.write(f"rank {os.environ.get('RANK')} cleanup waited {time.perf_counter() - t0:.3f} s, "
                     f"group left: {not torch.distributed.is_initialized()}\n")
    sys.stdout.flush()


def main() -> None:
    import os
    import sys

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--cleanup-delay-rank1", type=float, default=None,
                   help="no training: time pdist.cleanup with rank 1 arriving this many s late")
    p.add_argument("--no-sync", action="store_true", help="with --cleanup-delay-rank1: cleanup(synchronize=False)")
    p.add_argument("--steps", type=int, default=BASE.steps)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--max-seconds-rank1", type=float, default=None, help="a time limit on rank 1 only")
    p.add_argument("--norm", default=BASE.norm)
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.cleanup_delay_rank1 is not None:
        return cleanup_timing(args.cleanup_delay_rank1, not args.no_sync)
    limit = args.max_seconds_rank1 if os.environ.get("RANK") == "1" else None
    _, hist = run(args.out, args.steps, args.sleep, limit, model_seed=int(os.environ.get("RANK", 0)), norm=args.norm)
    # one write of the whole line (print writes text and newline apart, which unbuffered ranks can interleave)
    sys.stdout.write(f"rank {os.environ.get('RANK')} done: step {hist.step[-1] if hist.step else 0}, "
                     f"stopped={hist.stopped}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
