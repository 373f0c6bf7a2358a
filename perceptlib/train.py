"""The one training loop shared by super-resolution and style transfer.

``train(model, loss_fn, data, cfg, out_dir)`` runs Adam for ``cfg.steps`` steps on batches drawn by a
seeded, index-based sampler (batch ``i`` is a pure function of ``(cfg.seed, i)``), checkpoints to
``out_dir`` every ``cfg.checkpoint_every`` steps and resumes from there bit for bit on CPU. Files
in ``out_dir`` (only the latest of each is kept; every write is atomic):

- ``checkpoint.pt``: model, optimiser, step, RNG states, sampler position, config, history (resume);
- ``model.pt``: the model weights with its class, hyper-parameters, config and step (small; what
  :func:`load_model` and the ``upscale``/``stylize`` commands read);
- ``config.json`` and ``history.json``: the same config and loss history as text;
- ``.lock`` while a run holds the folder (:mod:`perceptlib.runlock`): a second run there is refused.

Under ``torchrun --nproc-per-node N`` the loop runs data-parallel (:mod:`perceptlib.distributed`): each
process takes its share of every global batch of ``cfg.batch_size``, gradients are averaged, and only
rank 0 writes files.

``cfg`` is any dataclass with ``steps``, ``batch_size``, ``lr``, ``seed``, ``checkpoint_every``,
``log_every``, ``device``, ``precision`` and ``channels_last`` fields, and optionally ``compile``
(:class:`perceptlib.config.SRConfig`, :class:`perceptlib.config.StyleConfig`).
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import io
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed as pdist
from .runlock import RunLock

__all__ = [
    "History", "IndexSampler", "TrainingDivergedError", "CheckpointError", "CheckpointWriteError", "train",
    "learning_rate", "load_checkpoint", "load_model", "infer", "fork_run", "CHECKPOINT", "MODEL_FILE", "FORK_FILE",
]

CHECKPOINT = "checkpoint.pt"
MODEL_FILE = "model.pt"
FORK_FILE = "fork.json"
_FORMAT = "perceptlib-train"
_VERSION = 1


def learning_rate(cfg: Any, step: int) -> float:
    """Adam's learning rate for the update from ``step`` to ``step + 1``: ``cfg.lr``, or the rate of the last
    ``cfg.lr_drops`` entry ``(s, rate)`` with ``s <= step`` (configs without ``lr_drops``: ``cfg.lr``)."""
    lr = float(cfg["lr"] if isinstance(cfg, Mapping) else cfg.lr)
    drops = cfg.get("lr_drops", ()) if isinstance(cfg, Mapping) else getattr(cfg, "lr_drops", ())
    for s, rate in drops or ():
        if step >= int(s):
            lr = float(rate)
    return lr


# config fields that may change between a run and its resumption (a later session may run on another
# machine: the hardware settings may differ; each session's device and precision are in history.sessions)
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "device", "mode", "eval_limit", "precision", "amp", "recipe",
                      "channels_last", "compile"}

LossFn = Callable[[nn.Module, Any], "tuple[Tensor, Mapping[str, Tensor | float]]"]


class TrainingDivergedError(RuntimeError):
    """The loss or the gradients became NaN/inf, or the gradient stayed zero (the network stopped learning);
    the last good checkpoint was left untouched."""


# a network whose gradient is exactly zero on this many of the last DEAD_WINDOW steps has collapsed (dead ReLUs
# or a saturated output head): training stops. While any of those steps had a zero gradient, checkpoints wait.
DEAD_WINDOW, DEAD_STEPS = 100, 90


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not what was expected."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a file of the run failed (disk full, quota, file size limit, I/O error): the message names
    the file and the free space; ``errno`` is the OS error's. The previous file is left as it was."""


@dataclasses.dataclass
class History:
    """Loss history: ``step[k]`` and, per term, ``terms[name][k]``, the mean of that term over the
    ``log_every`` steps ending at ``step[k]`` (as Python floats; the last entry of a run whose length
    is not a multiple of ``log_every`` averages fewer steps, and a resumed run redoes it). ``elapsed_s`` is wall time spent
    training over all sessions; ``sessions`` has one record per call of :func:`train` (steps, seconds,
    device, precision, machine). Neither is part of equality: compare ``step`` and ``terms``."""

    step: list[int] = dataclasses.field(default_factory=list)
    terms: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    elapsed_s: float = dataclasses.field(default=0.0, compare=False)
    sessions: list[dict] = dataclasses.field(default_factory=list, compare=False)
    steps_run: int = dataclasses.field(default=0, compare=False)  # steps done in this call
    session_s: float = dataclasses.field(default=0.0, compare=False)  # wall time of this call
    stopped: str | None = dataclasses.field(default=None, compare=False)  # why this call stopped early

    def __len__(self) -> int:
        return len(self.step)

    def __getitem__(self, name: str) -> list[float]:
        return self.terms[name]

    def append(self, step: int, values: Mapping[str, float]) -> None:
        for name in set(self.terms) | set(values):
            col = self.terms.setdefault(name, [math.nan] * len(self.step))
            col.append(float(values.get(name, math.nan)))
        self.step.append(int(step))

    def to_dict(self) -> dict:
        return {"step": list(self.step), "terms": {k: list(v) for k, v in self.terms.items()},
                "elapsed_s": self.elapsed_s, "sessions": [dict(r) for r in self.sessions]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "History":
        return cls(list(d.get("step", [])), {k: list(v) for k, v in d.get("terms", {}).items()},
                   float(d.get("elapsed_s", 0.0)), sessions=[dict(r) for r in d.get("sessions", [])])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        """Read ``history.json`` (or the history inside a checkpoint)."""
        path = Path(path)
        if path.suffix == ".json":
            return cls.from_dict(json.loads(path.read_text()))
        return cls.from_dict(load_checkpoint(path)["history"])


class IndexSampler:
    """Infinite, seeded batches of dataset indices: batch ``i`` is ``perm_e[k % n]`` for the sample
    numbers ``k = i * batch_size ... (i + 1) * batch_size - 1``, where ``e = k // n`` and ``perm_e`` is
    ``numpy.random.default_rng((seed, e)).permutation(n)``. Its position is just the batch number,
    so resuming needs no state beyond the step."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < 1 or batch_size < 1:
            raise ValueError(f"need a non-empty dataset and batch_size >= 1, got n={n}, batch_size={batch_size}")
        self.n, self.batch_size, self.seed = int(n), int(batch_size), int(seed)
        self._perm: tuple[int, np.ndarray] | None = None

    def _epoch(self, e: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != e:
            self._perm = (e, np.random.default_rng((self.seed, e)).permutation(self.n))
        return self._perm[1]

    def indices(self, batch: int) -> list[int]:
        start = batch * self.batch_size
        return [int(self._epoch(k // self.n)[k % self.n]) for k in range(start, start + self.batch_size)]

    def state(self, batch: int) -> dict:
        return {"kind": "IndexSampler", "n": self.n, "batch_size": self.batch_size, "seed": self.seed,
                "next_batch": int(batch)}


def _collate(items: list) -> Any:
    return torch.utils.data.default_collate(items)


def _to_device(batch: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.dim() == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device, channels_last) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


def _config_dict(cfg: Any) -> dict:
    if dataclasses.is_dataclass(cfg):
        d = dataclasses.asdict(cfg)
        d["_type"] = type(cfg).__name__
        return json.loads(json.dumps(d))  # tuples -> lists: the form it has after a reload
    if isinstance(cfg, Mapping):
        return json.loads(json.dumps(dict(cfg)))
    raise TypeError(f"cfg must be a dataclass or a mapping, got {type(cfg).__name__}")


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` (str, bytes or anything ``torch.save`` takes) to a temp file next to ``path``, then
    rename it over ``path``. On failure the temp file is removed and ``path`` is untouched; an OS error
    (disk full, ...) becomes a :class:`CheckpointWriteError` naming the file and the free space."""
    if isinstance(obj, (str, bytes)):
        data = obj.encode() if isinstance(obj, str) else obj
    else:  # serialised in memory first: a failing write is then a plain OSError, not torch's RuntimeError
        buf = io.BytesIO()
        torch.save(obj, buf)
        data = buf.getbuffer()
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, CheckpointWriteError):
            raise _write_error(path, e, len(data)) from e
        raise


def _write_error(path: Path, e: OSError, size: int) -> CheckpointWriteError:
    try:
        du = shutil.disk_usage(path.parent)
        space = f"{_bytes(du.free)} free of {_bytes(du.total)} on its file system"
    except OSError:
        space = "free space unknown"
    why = {errno.EFBIG: " (file size limit, see `ulimit -f`)", errno.EDQUOT: " (disk quota)"}.get(e.errno or 0, "")
    err = CheckpointWriteError(
        f"cannot write {path} ({_bytes(size)}): {e.strerror or e}{why}; {space}. The previous {path.name} (if any) "
        "is unchanged and the partial file was removed; free some space and run again to resume")
    err.errno = e.errno
    return err


def _bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"``."""
    if n < 1000:
        return f"{n:.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def _cpu_state(model: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _model_record(model: nn.Module) -> dict:
    return {"class": type(model).__name__, "hparams": dict(getattr(model, "hparams", {}) or {})}


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a ``checkpoint.pt`` or ``model.pt`` written by :func:`train` (on the CPU).

    Raises :class:`CheckpointError` (a ValueError) naming the file when it is missing, is a folder
    without a checkpoint, cannot be read, or is not a perceptlib training file.
    """
    path = Path(path)
    if path.is_dir():
        for name in (MODEL_FILE, CHECKPOINT):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise CheckpointError(f"no {MODEL_FILE} or {CHECKPOINT} in folder {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise CheckpointError(f"{path} is not a perceptlib training checkpoint (no '{_FORMAT}' format tag)")
    if ckpt.get("version", 0) > _VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt['version']}; this perceptlib reads <= {_VERSION}")
    ckpt["path"] = str(path)
    return ckpt


def fork_run(src: str | os.PathLike, dst: str | os.PathLike, changes: Mapping[str, Any]) -> dict:
    """Start the run ``dst`` from the latest checkpoint of the run in folder ``src`` with the config fields
    in ``changes`` set to new values (e.g. ``{"pixel_weight": 1e6}``): weights, Adam's state, step, RNG and
    sampler position and the loss history carry over, so :func:`train` with the changed config and
    ``out_dir=dst`` continues from the fork's step (the same call with the old config is refused).
    ``dst/fork.json`` records ``{"from", "step", "changes", "before"}``; ``src`` is only read.

    Raises ValueError when a field is not in the run's config or keeps its value, or when ``dst`` holds
    a checkpoint already; :class:`CheckpointError` when ``src`` has none. Returns the ``fork.json`` record."""
    src, dst = Path(src), Path(dst)
    ckpt = load_checkpoint(src / CHECKPOINT)
    cfg = dict(ckpt["config"])
    fields = set(cfg) - {"_type"}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ValueError(f"{src}: no config field(s) {unknown}; fields: {sorted(fields)}")
    same = sorted(k for k, v in changes.items() if cfg[k] == v)
    if same:
        raise ValueError(f"{src}: {same} already {[cfg[k] for k in same]}; a fork changes something")
    if (dst / CHECKPOINT).exists():
        raise ValueError(f"{dst} holds a checkpoint already; fork into a new folder")
    dst.mkdir(parents=True, exist_ok=True)
    before = {k: cfg[k] for k in changes}
    ckpt["config"] = {**cfg, **changes}
    ckpt.pop("path", None)
    record = {"from": str(src), "step": int(ckpt["step"]), "changes": dict(changes), "before": before}
    _atomic_save(json.dumps(record, indent=2) + "\n", dst / FORK_FILE)
    _atomic_save(json.dumps({**ckpt["config"], "_fork": record}, indent=2) + "\n", dst / "config.json")
    _atomic_save(json.dumps({**ckpt["history"], "last_step": int(ckpt["step"])}) + "\n", dst / "history.json")
    _atomic_save(ckpt, dst / CHECKPOINT)
    return record


def load_model(path: str | os.PathLike, expect: str | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network stored in a checkpoint (``model.pt``, ``checkpoint.pt`` or their folder),
    in eval mode on ``device``. ``expect``: the class name it must be (e.g. ``"SRNet"``).
    The checkpoint's config and step are attached as ``model.train_config`` / ``model.train_step``."""
    from .nets import build_net

    ckpt = load_checkpoint(path)
    rec = ckpt.get("model_class") or {}
    name = rec.get("class")
    if expect is not None and name != expect:
        raise CheckpointError(f"{ckpt['path']} holds a {name or 'unknown'} network, expected {expect}")
    try:
        model = build_net(name, rec.get("hparams", {}))
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{ckpt['path']}: cannot rebuild the {name} network: {str(e).splitlines()[0]}") from e
    model.train_config = ckpt.get("config")  # type: ignore[assignment]
    model.train_step = ckpt.get("step")  # type: ignore[assignment]
    return model.to(device).eval()


def infer(model: nn.Module, batch: Tensor, precision: str = "auto") -> Tensor:
    """``model(batch)`` in eval mode, without grad, on the model's device -> float32 on the CPU; the
    model's train/eval mode is restored afterwards. ``batch``: ``(N, C, H, W)``. ``precision``:
    ``auto`` (bf16 autocast where the device has native bf16), ``bf16`` or ``off`` (fp32)."""
    from .precision import autocast, resolve_precision

    device = next(model.parameters()).device
    used = resolve_precision(precision, device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), autocast(used, device):
            return model(batch.float().to(device)).float().cpu()
    finally:
        model.train(was_training)


def _resolve_device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        from .config import default_device

        return default_device()
    return torch.device(name)


def _precision_of(cfg: Any) -> str:
    """``cfg.precision``, or for configs of older perceptlib (``amp``): ``"auto"`` when ``amp`` was on.
    A config without either trains in fp32."""
    if hasattr(cfg, "precision"):
        return str(cfg.precision)
    if isinstance(cfg, Mapping):
        if "precision" in cfg:
            return str(cfg["precision"])
        return "auto" if cfg.get("amp") else "off"
    return "auto" if getattr(cfg, "amp", False) else "off"


def _compiled(loss_fn: LossFn) -> LossFn:
    """``loss_fn`` under ``torch.compile`` (inductor, static shapes): the call ``loss_fn(model, batch)`` is
    traced as a whole, so the network's forward pass and the loss become one graph and AOTAutograd compiles
    their backward with them. Neither the network nor the loss is wrapped: their ``state_dict`` keys stay as
    they are. Compiles at the first call; Python-only steps (checks on values) become graph breaks.

    The tensor terms leave the graph stacked in one new tensor: inductor may return a detached term and the
    total as one tensor object (``0 + x`` folds to ``x``, ``detach`` is a no-op there), and AOTAutograd marking
    the term non-differentiable then drops the total's gradient (pytorch/pytorch PR 195688)."""

    def packed(model: nn.Module, batch: Any) -> tuple:
        total, terms = loss_fn(model, batch)
        names = [k for k, v in terms.items() if isinstance(v, Tensor)]
        stacked = torch.stack([terms[k].detach().float().reshape(()) for k in names]) if names else None
        return total, list(terms), names, stacked, {k: v for k, v in terms.items() if k not in names}

    compiled = torch.compile(packed, dynamic=False)
    eager = [False]

    def forward(model: nn.Module, batch: Any) -> "tuple[Tensor, Mapping[str, Tensor | float]]":
        if eager[0]:
            return loss_fn(model, batch)
        buffers = [b.detach().clone() for b in model.buffers()]  # batch-norm statistics: a redo must not count twice
        rng = torch.get_rng_state()
        total, order, names, stacked, rest = compiled(model, batch)
        if not total.requires_grad and torch.is_grad_enabled() and any(p.requires_grad for p in model.parameters()):
            # the same bug where Dynamo compiled the loss apart from `packed` (after an exception raised inside
            # the loss while it was being traced, Dynamo falls back and compiles the inner calls on their own)
            warnings.warn("torch.compile returned a loss without gradient (an inductor aliasing bug); this run "
                          "continues without compile", stacklevel=2)
            eager[0] = True
            with torch.no_grad():
                for b, old in zip(model.buffers(), buffers):
                    b.copy_(old)
            torch.set_rng_state(rng)
            return loss_fn(model, batch)
        values = {**rest, **dict(zip(names, stacked.unbind() if stacked is not None else ()))}
        return total, {k: values[k] for k in order}

    return forward


def _finite(values: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values())


def _fmt_terms(values: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in values.items())


class _Batches:
    """The sampler's batches ``start ... stop - 1`` as a ``batch_sampler`` for a DataLoader."""

    def __init__(self, sampler: IndexSampler, start: int, stop: int) -> None:
        self.sampler, self.start, self.stop = sampler, start, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self):
        return (self.sampler.indices(i) for i in range(self.start, self.stop))


def _batch_source(data, sampler: IndexSampler, start: int, stop: int, workers: int, pin: bool):
    """Batches ``start ... stop - 1``: built in this process, or by ``workers`` DataLoader processes
    (identical batches: an item depends only on its index)."""
    if workers <= 0:
        return (_collate([data[i] for i in sampler.indices(b)]) for b in range(start, stop))
    loader = torch.utils.data.DataLoader(data, batch_sampler=_Batches(sampler, start, stop), num_workers=workers,
                                         collate_fn=_collate, pin_memory=pin, prefetch_factor=4)
    return iter(loader)


class _StopOnSignal:
    """While training, SIGTERM (``kill PID``, ``timeout``, a CI cancel) asks the loop to stop after the current step
    with a checkpoint, as the time limit does; a second SIGTERM acts as before (the previous handler). Handlers
    can only be set in the main thread: elsewhere this does nothing."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> None:
        self.signals, self.received, self._old = signals, None, {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # asked twice: the previous behaviour, now
            old = self._old.get(signum, signal.SIG_DFL)
            signal.signal(signum, old)
            if callable(old):
                old(signum, frame)
            else:
                os.kill(os.getpid(), signum)
            return
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def train(model: nn.Module, loss_fn: LossFn, data: torch.utils.data.Dataset, cfg: Any,
          out_dir: str | os.PathLike, resume: bool = True, progress: bool = True, workers: int = 0,
          max_seconds: float | None = None) -> History:
    """Train ``model`` with Adam(``cfg.lr``, dropped as ``cfg.lr_drops`` says: :func:`learning_rate`) for
    ``cfg.steps`` steps; return the :class:`History`.

    Args:
        model: the network (trained in place; left in train mode on ``cfg.device``).
        loss_fn: ``loss_fn(model, batch) -> (total, terms)``: the scalar to minimise and a dict of
            named terms (tensors or floats) for logging. ``batch`` is ``default_collate`` of
            ``cfg.batch_size`` dataset items, on the device (channels_last on CUDA when enabled).
            An ``nn.Module`` loss is moved to the device too.
        data: a map-style dataset; batches come from :class:`IndexSampler` ``(len(data),
            cfg.batch_size, cfg.seed)``.
        cfg: the config dataclass (module docstring); saved with every checkpoint.
        out_dir: folder for ``checkpoint.pt``, ``model.pt``, ``config.json``, ``history.json``.
        resume: continue from ``out_dir/checkpoint.pt`` when present (the config may differ only in
            ``steps``, ``checkpoint_every``, ``device``, ``mode``, ``eval_limit``, ``recipe`` and the hardware
            settings ``precision``, ``channels_last`` and ``compile``, and in ``lr_drops`` at or after the checkpoint's
            step, else ValueError); ``False`` starts afresh
            and overwrites.
        progress: show a tqdm bar with the loss terms.
        workers: DataLoader worker processes preparing batches (0: in this process); the batches
            are the same either way.
        max_seconds: stop cleanly (checkpoint saved, ``history.stopped`` set) once this call has run
            this long, e.g. to fit a time-limited machine; resume later for the remaining steps. A SIGTERM
            stops the same way after the current step (a second SIGTERM kills at once).

    Raises :class:`TrainingDivergedError` when the loss, a term or a gradient is not finite, or when the
    gradient was exactly zero on :data:`DEAD_STEPS` of the last :data:`DEAD_WINDOW` steps (a collapsed network:
    no checkpoint is written while any of those steps had a zero gradient): the message names the step and the
    terms, and the last checkpoint is left as it was.
    Precision: ``cfg.precision`` (``auto``/``bf16``/``off``, :mod:`perceptlib.precision`) decides bf16
    autocast for the forward pass and the loss; the parameters and Adam stay fp32. The precision used is
    printed (with ``progress``) and kept per session in ``history.sessions`` and ``config.json``'s
    ``_run``. channels_last applies only on CUDA (``cfg.channels_last``).

    ``cfg.compile`` (default off): ``loss_fn(model, batch)`` runs under ``torch.compile`` (inductor), the
    network's forward pass and the loss traced together and their backward compiled with them; gradients,
    NaN checks and Adam stay as they are. The first step pays the compilation (tens of seconds on a CPU). The
    module is not wrapped, so checkpoints hold its own ``state_dict`` (no ``_orig_mod.`` prefix) and load
    without compilation. The results equal eager ones up to rounding: a run resumes bit for bit when its
    sessions use the same setting (with ``compile`` on: the same torch build and machine, so the same kernels),
    and ``compile`` may be switched on or off when resuming. Kept per session in ``history.sessions``. Should
    a compiled loss come back without a gradient (an inductor aliasing bug), a warning says so and the run
    continues eagerly. With several processes ``compile`` is ignored (a warning says so): DDP's forward
    breaks the compiled graph apart and the loss's gradient is lost.

    The run holds ``out_dir/.lock`` (:class:`perceptlib.runlock.RunLock`) until it returns or raises: a
    second run on the folder gets :class:`~perceptlib.runlock.RunLockedError` at once. A failed file write
    (disk full) raises :class:`CheckpointWriteError`; the previous checkpoint stays loadable.

    Several processes (``torchrun --nproc-per-node N``, :mod:`perceptlib.distributed`): ``cfg.batch_size``
    stays the global batch and must be divisible by N; rank ``r`` takes the ``r``-th contiguous share of
    every :class:`IndexSampler` batch, the model is wrapped in ``DistributedDataParallel`` (gradients
    averaged, so with batch-mean losses a step equals the 1-process step on the whole batch), and the
    logged terms are averaged over ranks. Batch norm becomes ``SyncBatchNorm`` on CUDA; on the CPU
    (gloo) PyTorch has no SyncBatchNorm, so each process normalises over its own share (a warning says
    so; instance norm and ``norm="none"`` are unaffected). Only rank 0 locks the folder, writes files
    and shows progress; it reads the checkpoint and sends it to the others, so a run resumes with any
    N. The time limit and the NaN checks are decided together: all ranks stop at the same step.
    ``history.sessions`` and ``config.json``'s ``_run`` record ``world_size``.
    """
    device = pdist.local_device(_resolve_device(getattr(cfg, "device", "auto")))
    owned = pdist.init(device)  # under torchrun with WORLD_SIZE > 1: join the process group
    lock, finished = None, False
    try:
        lock = pdist.on_main(lambda: _take_folder(Path(out_dir)), share=False)
        history = _train(model, loss_fn, data, cfg, Path(out_dir), device, resume, progress and pdist.is_main(),
                         workers, max_seconds)
        finished = True
        return history
    finally:
        if lock is not None:
            lock.release()
        if owned:
            pdist.cleanup(synchronize=finished)


def _take_folder(out: Path) -> RunLock:
    """Create ``out``, lock it, and remove the temp files a killed run may have left (no writer is left)."""
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out, what=" ".join(sys.argv)[:300]).acquire()
    for name in (CHECKPOINT, MODEL_FILE, "config.json", "history.json"):
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    return lock


def _train(model: nn.Module, loss_fn: LossFn, data: torch.utils.data.Dataset, cfg: Any, out: Path,
           device: torch.device, resume: bool, progress: bool, workers: int, max_seconds: float | None) -> History:
    """The loop of :func:`train` (rank 0 holds ``out``; ``progress`` only there)."""
    from tqdm.auto import tqdm

    from .precision import autocast, describe_machine, resolve_precision

    cuda = device.type == "cuda"
    precision = resolve_precision(_precision_of(cfg), device)
    use_compile = bool(getattr(cfg, "compile", False))
    channels_last = cuda and bool(getattr(cfg, "channels_last", False))
    steps, batch_size = int(cfg.steps), int(cfg.batch_size)
    ckpt_every = max(1, int(getattr(cfg, "checkpoint_every", 1000)))
    log_every = max(1, int(getattr(cfg, "log_every", 1)))
    cfg_dict = _config_dict(cfg)
    world, rank = pdist.world_size(), pdist.rank()

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model = pdist.sync_batchnorm(model, device)  # several processes on CUDA: BatchNorm -> SyncBatchNorm
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.lr))
    sampler = IndexSampler(len(data), batch_size, int(cfg.seed))
    shard = pdist.RankSlice(sampler, rank, world) if world > 1 else sampler  # this rank's share of each batch
    history, step, pending, pending_n = History(), 0, {}, 0
    ckpt_path = out / CHECKPOINT

    # read by rank 0 and sent to the others (no shared folder needed); its errors raise on every rank
    ckpt = pdist.on_main(lambda: load_checkpoint(ckpt_path) if resume and ckpt_path.is_file() else None)
    if ckpt is not None:
        # fields added to the config class after the checkpoint was written count as their default value
        defaults = _config_dict(type(cfg)()) if dataclasses.is_dataclass(cfg) else {}
        old = {k: v for k, v in {**defaults, **ckpt["config"]}.items() if k not in _RESUMABLE_CHANGES}
        new = {k: v for k, v in cfg_dict.items() if k not in _RESUMABLE_CHANGES}
        # learning-rate drops may change where they lie ahead: the updates already made used the same rates
        at = int(ckpt["step"])
        old["lr_drops"] = [list(d) for d in old.get("lr_drops") or () if int(d[0]) < at]
        new["lr_drops"] = [list(d) for d in new.get("lr_drops") or () if int(d[0]) < at]
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(f"cannot resume {ckpt_path}: the config differs in {diff} "
                             f"(checkpoint: {[old.get(k) for k in diff]}, now: {[new.get(k) for k in diff]}); "
                             "use another out_dir or resume=False")
        if ckpt.get("model_class", {}).get("class") != type(model).__name__:
            raise ValueError(f"cannot resume {ckpt_path}: it holds a {ckpt['model_class']['class']}, "
                             f"not a {type(model).__name__}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["step"])
        history = History.from_dict(ckpt["history"])
        pending, pending_n = dict(ckpt.get("pending", {})), int(ckpt.get("pending_n", 0))
        if history.step and history.step[-1] % log_every:
            # the run ended inside a log interval: that partial entry is redone from `pending`
            history.step.pop()
            for col in history.terms.values():
                col.pop()
        _set_rng_state(ckpt["rng"])
        if step > steps:
            warnings.warn(f"{ckpt_path} is already at step {step}, past cfg.steps={steps}; nothing to do",
                          stacklevel=2)
    else:
        torch.manual_seed(int(cfg.seed))
        np.random.seed(int(cfg.seed) % 2**32)
        random.seed(int(cfg.seed))

    def save(pending: dict, pending_n: int) -> None:
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:  # never overwrite a good checkpoint with a broken model (the same on every rank)
            raise TrainingDivergedError(f"non-finite parameters {bad[:3]} at step {step}; "
                                        f"last good checkpoint: {ckpt_path} (left untouched)")

        def write() -> None:  # rank 0 only; a failure (disk full) raises on every rank
            state = _cpu_state(model)  # the unwrapped model: no DDP "module." prefix
            common = {"format": _FORMAT, "version": _VERSION, "step": step, "config": cfg_dict,
                      "model_class": _model_record(model), "model": state}
            _atomic_save({**common, "optimizer": optimizer.state_dict(), "rng": _rng_state(),
                          "sampler": sampler.state(step), "history": history.to_dict(),
                          "pending": dict(pending), "pending_n": pending_n}, ckpt_path)
            _atomic_save(common, out / MODEL_FILE)
            _atomic_save(json.dumps({**cfg_dict, "_run": run}, indent=2) + "\n", out / "config.json")
            _atomic_save(json.dumps({**history.to_dict(), "last_step": step}) + "\n", out / "history.json")

        pdist.on_main(write, share=False)

    net = pdist.wrap(model, device)  # DistributedDataParallel with several processes
    net.train()
    if use_compile and world > 1:  # inside a compiled function, DDP's forward breaks the graph (torch 2.14)
        warnings.warn("cfg.compile is ignored with several processes: DDP's forward splits the compiled graph, "
                      "which loses the loss's gradient; training eagerly", stacklevel=3)
        use_compile = False
    forward = _compiled(loss_fn) if use_compile else loss_fn
    start_step, t0 = step, time.perf_counter()
    elapsed0 = history.elapsed_s
    run = {**describe_machine(device), "precision": precision, "start_step": step, "end_step": step, "seconds": 0.0,
           "world_size": world, "compile": use_compile}
    history.sessions.append(run)
    if progress:
        print(f"training on {run['device']} ({run['name']}, {run['threads']} threads), precision {precision} "
              f"(cfg.precision={_precision_of(cfg)!r}, bf16 supported: {run['bf16_supported']})"
              + (", torch.compile (the first step compiles)" if use_compile else "")
              + (f", {world} processes, {batch_size // world} of each batch of {batch_size} per process"
                 if world > 1 else ""))
    bar = tqdm(total=steps, initial=step, disable=not progress, desc=f"train {type(model).__name__}",
               dynamic_ncols=True)
    amp_ctx = lambda: autocast(precision, device)  # noqa: E731
    batches = _batch_source(data, shard, step, steps, int(workers), cuda)
    stopped = None
    zero_grad = collections.deque(maxlen=DEAD_WINDOW)  # per step of this session: was the gradient exactly 0?
    term = _StopOnSignal().__enter__()
    try:
        while step < steps:
            timed_out = max_seconds is not None and time.perf_counter() - t0 >= max_seconds
            if pdist.any_true(timed_out or term.received is not None, device):  # all ranks stop at the same step
                if term.received is not None:
                    stopped = f"{term.received} received: stopped at step {step}"
                elif timed_out:
                    stopped = f"time limit of {max_seconds:g} s reached at step {step}"
                else:
                    stopped = f"another process reached its time limit or a SIGTERM: stopped at step {step}"
                if pending_n:  # a partial log interval: logged now, redone from its sums on resume
                    history.append(step, {k: v / pending_n for k, v in pending.items()})
                history.elapsed_s = elapsed0 + time.perf_counter() - t0
                save(pending, pending_n)
                break
            batch = _to_device(next(batches), device, channels_last)
            optimizer.zero_grad(set_to_none=True)
            with amp_ctx():
                total, terms = forward(net, batch)
            values = {k: float(v.detach().float()) if isinstance(v, Tensor) else float(v) for k, v in terms.items()}
            values.setdefault("total", float(total.detach().float()))
            values = pdist.mean_values(values, device)  # over ranks: the global batch's mean; a NaN stops all
            if not (_finite(values) and math.isfinite(values["total"])):
                raise TrainingDivergedError(
                    f"non-finite loss at step {step + 1}: {_fmt_terms(values)}; stopped, last good checkpoint: "
                    f"{ckpt_path if ckpt_path.is_file() else 'none yet'} (left untouched)")
            total.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            gnorm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))
            if not math.isfinite(gnorm):
                raise TrainingDivergedError(
                    f"non-finite gradient at step {step + 1} (loss terms {_fmt_terms(values)}); stopped, last good "
                    f"checkpoint: {ckpt_path if ckpt_path.is_file() else 'none yet'} (left untouched)")
            zero_grad.append(gnorm == 0.0)
            if sum(zero_grad) >= DEAD_STEPS:
                raise TrainingDivergedError(
                    f"zero gradient on {sum(zero_grad)} of the {len(zero_grad)} steps up to step {step + 1}: the "
                    "network has stopped learning (dead ReLUs or a saturated output; loss terms "
                    f"{_fmt_terms(values)}); "
                    f"stopped, last good checkpoint: {ckpt_path if ckpt_path.is_file() else 'none yet'} (left "
                    "untouched); resume from it with a lower learning rate or another config (perceptlib fork)")
            lr = learning_rate(cfg, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            step += 1
            run["end_step"], run["seconds"] = step, round(time.perf_counter() - t0, 3)
            values["grad_norm"] = gnorm
            for k, v in values.items():
                pending[k] = pending.get(k, 0.0) + v
            pending_n += 1
            partial = None
            if step % log_every == 0 or step == steps:
                history.append(step, {k: v / pending_n for k, v in pending.items()})
                if step % log_every:  # a last, partial interval: keep its sums for a resumption
                    partial = (dict(pending), pending_n)
                pending, pending_n = {}, 0
            history.elapsed_s = elapsed0 + time.perf_counter() - t0
            bar.update(1)
            if progress and (step % 5 == 0 or step == steps):
                bar.set_postfix({k: f"{v:.3g}" for k, v in values.items() if "/" not in k}, refresh=False)
            if (step % ckpt_every == 0 and not any(zero_grad)) or step == steps:  # no checkpoint of a dying net
                save(*(partial or (pending, pending_n)))
    finally:
        term.__exit__()
        bar.close()
        del batches  # stops DataLoader workers
    if stopped:
        history.stopped = stopped
        if progress:
            print(f"stopped: {stopped}; resume with the same command to continue to step {steps}")
    history.elapsed_s = elapsed0 + time.perf_counter() - t0
    history.steps_run = step - start_step
    history.session_s = time.perf_counter() - t0
    if step == start_step and not pdist.on_main(ckpt_path.is_file):
        save(pending, pending_n)
    return history
