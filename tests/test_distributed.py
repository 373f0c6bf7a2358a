"""Data-parallel training (torchrun, gloo on 127.0.0.1): 2 processes with a global batch of 4 end with the
weights of 1 process with batch 4; a SIGKILLed 2-process run resumes (on 2 processes, then on 1) to the
same weights; a time limit on one rank stops both at the same step; the train-sr command under torchrun; the
process group is left with a barrier only after a normal end."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceptlib.distributed import RankSlice
from perceptlib.train import History, IndexSampler, load_checkpoint

import ddp_worker
from conftest import load_asset

pytestmark = pytest.mark.usefixtures("one_thread")

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{WORKER.parent}"}


def launch(args: list[str], timeout: float = 120, nproc: int = 2) -> subprocess.CompletedProcess:
    proc = subprocess.run(torchrun(args, nproc), env=env(), capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)
    return proc


def descendants(pid: int) -> list[int]:
    """Child processes of ``pid``, recursively (from /proc). torchrun starts its workers in new sessions,
    so killing the launcher's process group alone leaves them running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path / "model.pt")["model"]


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()  # no DDP "module." prefix
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def assert_close_history(a: History, b: History) -> None:
    assert a.step == b.step and a.terms.keys() == b.terms.keys()
    for k in a.terms:
        np.testing.assert_allclose(a.terms[k], b.terms[k], rtol=1e-4, atol=1e-7, err_msg=k)


def test_rank_slices_make_up_the_global_batch():
    s = IndexSampler(10, 4, seed=1)
    for b in range(6):
        assert RankSlice(s, 0, 2).indices(b) + RankSlice(s, 1, 2).indices(b) == s.indices(b)
        assert sum((RankSlice(s, r, 4).indices(b) for r in range(4)), []) == s.indices(b)
    with pytest.raises(ValueError, match="batch_size 4 is not divisible by the 3 processes"):
        RankSlice(s, 0, 3)


def test_two_processes_equal_one_process(tmp_path):
    ref_model, ref_hist = ddp_worker.run(tmp_path / "one", 6)
    proc = launch([str(WORKER), str(tmp_path / "two"), "--steps", "6"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    diff = max_diff(weights(tmp_path / "two"), {k: v for k, v in ref_model.state_dict().items()})
    print(f"max |w_2proc - w_1proc| = {diff:.3g}")
    assert diff <= 1e-5
    two = History.load(tmp_path / "two" / "history.json")
    assert_close_history(two, ref_hist)
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["_run"]["world_size"] == 2 and cfg["batch_size"] == 4
    assert [s["world_size"] for s in two.sessions] == [2]
    assert not (tmp_path / "two" / ".lock").exists()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "checkpoint.pt", "config.json", "history.json", "model.pt"]


def test_killed_two_process_run_resumes_on_two_then_one(tmp_path):
    ref_model, ref_hist = ddp_worker.run(tmp_path / "ref", 8)
    out = tmp_path / "run"
    # 1) 2 processes, 0.5 s per step; after the step-2 checkpoint, SIGKILL of the launcher and its workers
    # (a machine that died)
    p = subprocess.Popen(torchrun([str(WORKER), str(out), "--steps", "8", "--sleep", "0.5"]), env=env(), cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline, step = time.time() + 90, 0
    while time.time() < deadline and p.poll() is None:
        if (out / "checkpoint.pt").is_file() and (step := load_checkpoint(out / "checkpoint.pt")["step"]) >= 2:
            break
        time.sleep(0.05)
    assert p.poll() is None, p.stdout.read().decode()[-3000:]
    workers = descendants(p.pid)
    assert len(workers) >= 2
    for pid in [p.pid, *workers]:
        os.kill(pid, signal.SIGKILL)
    p.wait(30)
    p.stdout.close()
    killed_at = load_checkpoint(out / "checkpoint.pt")["step"]  # the last checkpoint is intact
    assert 2 <= killed_at < 8 and (out / ".lock").is_file()  # the dead run's lock is left behind
    # 2) resume on 2 processes; only rank 1 has a time limit: both must stop at the same step (no deadlock)
    proc = launch([str(WORKER), str(out), "--steps", "8", "--sleep", "0.3", "--max-seconds-rank1", "0.5"])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert "replacing the stale lock" in text
    done = [line for line in text.splitlines() if " done: step " in line]
    assert len(done) == 2 and len({d.split("done: step ")[1].split(",")[0] for d in done}) == 1, done  # same step
    mid = load_checkpoint(out / "checkpoint.pt")["step"]
    assert killed_at < mid < 8 and "time limit" in done[0]
    # 3) finish on 1 process (another N): the weights of the uninterrupted 1-process run
    model, hist = ddp_worker.run(out, 8, model_seed=7)
    diff = max_diff({k: v for k, v in model.state_dict().items()}, ref_model.state_dict())
    print(f"killed at {killed_at}, stopped at {mid}, resumed on 1: max |w - w_ref| = {diff:.3g}")
    assert diff <= 1e-5
    assert_close_history(hist, ref_hist)
    assert [s["world_size"] for s in hist.sessions][-2:] == [2, 1]
    assert not (out / ".lock").exists() and not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("synchronize", [True, False])
def test_cleanup_waits_for_every_rank_only_after_a_normal_end(tmp_path, synchronize):
    # rank 1 arrives 1.5 s late: after a normal end rank 0 waits for it in the barrier before tearing the
    # connections down; after an error (synchronize=False) it must not wait (the others may be stuck)
    args = [str(WORKER), str(tmp_path), "--cleanup-delay-rank1", "1.5", *([] if synchronize else ["--no-sync"])]
    proc = launch(args)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    waits = {int(line.split()[1]): float(line.split("waited ")[1].split()[0])
             for line in text.splitlines() if " cleanup waited " in line}
    assert set(waits) == {0, 1} and "group left: True" in text and "group left: False" not in text, text[-3000:]
    if synchronize:
        assert waits[0] >= 1.0, waits
    else:
        assert waits[0] < 1.0, waits


def test_cli_train_sr_under_torchrun(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "coffee"):
        arr = (load_asset(name, 64)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(photos / f"{name}.png")
    out = tmp_path / "run"
    proc = launch(["-m", "perceptlib", "train-sr", "--mode", "quick", "--loss", "pixel", "--steps", "2",
                   "--train-set", str(photos), "--out", str(out), "--no-progress", "--device", "cpu",
                   "--precision", "off", "--channels", "4", "--blocks", "1", "--patch-size", "24"])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    assert text.count("train-sr x4, loss l_pixel") == 1 and "step 2/2" in text  # printed by rank 0 only
    assert "SyncBatchNorm needs CUDA" in text  # norm=batch on CPU processes: per-process statistics, said
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["_run"]["world_size"] == 2 and cfg["batch_size"] == 2
    from perceptlib.sr import load_sr

    assert load_sr(out).train_step == 2 and not (out / ".lock").exists()
