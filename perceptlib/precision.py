"""Numeric precision, decided in one place: bf16 autocast where the hardware has it, fp32 elsewhere.

``precision`` is ``"auto"`` (bf16 autocast on CUDA GPUs and on CPUs whose oneDNN has bf16 kernels,
e.g. AVX512_BF16 or AMX; fp32 otherwise), ``"bf16"`` (always; slow on CPUs without bf16 units, where
oneDNN falls back to emulation) or ``"off"`` (fp32). Autocast runs convolutions and matrix products
in bf16; parameters, optimiser state, Gram matrices and loss reductions stay fp32
(:func:`perceptlib.losses.gram_matrix` turns autocast off for its product).

Typical use::

    used = resolve_precision("auto", device)   # "bf16" or "fp32"
    with autocast(used, device):
        loss = loss_fn(model(x), x)
"""
from __future__ import annotations

import contextlib
import functools
import warnings

import torch

__all__ = ["PRECISIONS", "bf16_supported", "resolve_precision", "autocast", "describe_machine"]

PRECISIONS = ("auto", "bf16", "off")


@functools.lru_cache(maxsize=None)
def _cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """True when ``device`` runs bf16 convolutions natively: a CUDA GPU with bf16 (Ampere or newer)
    or a CPU whose oneDNN reports bf16 support."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_bf16()
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> str:
    """``"auto"``/``"bf16"``/``"off"`` -> the precision actually used on ``device``: ``"bf16"`` or ``"fp32"``.

    ``"auto"`` picks bf16 only where :func:`bf16_supported`; an explicit ``"bf16"`` on a device without
    it is honoured with a warning (correct but much slower on such CPUs). ``"fp32"`` (a resolved value)
    is accepted as ``"off"``, so a resolved precision can be passed on."""
    if precision not in PRECISIONS and precision != "fp32":
        raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
    if precision in ("off", "fp32"):
        return "fp32"
    supported = bf16_supported(device)
    if precision == "auto":
        return "bf16" if supported else "fp32"
    if not supported:
        warnings.warn(f"precision='bf16' on {torch.device(device)}, which has no native bf16 support: "
                      "it will be much slower than fp32 (use 'auto' or 'off')", stacklevel=2)
    return "bf16"


def autocast(used: str, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager:
    """A context running its body in ``used`` precision (``"bf16"``: bf16 autocast on ``device``'s type;
    ``"fp32"``: nothing). ``used`` may also be ``"auto"``/``"off"`` (resolved first)."""
    if used in PRECISIONS:
        used = resolve_precision(used, device)
    if used not in ("bf16", "fp32"):
        raise ValueError(f"unknown precision {used!r}; expected 'bf16' or 'fp32'")
    if used == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def describe_machine(device: str | torch.device = "cpu") -> dict:
    """What a run's numbers depend on: device, its model name, threads, bf16 support and torch version."""
    device = torch.device(device)
    info: dict = {"device": device.type, "torch": str(torch.__version__), "threads": torch.get_num_threads(),
                  "bf16_supported": bf16_supported(device)}
    if device.type == "cuda" and torch.cuda.is_available():
        info["name"] = torch.cuda.get_device_name(device)
    else:
        info["name"] = _cpu_name()
    return info


@functools.lru_cache(maxsize=None)
def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line and line.split(":", 1)[0].strip()
                          in ("model name", "cpu family", "model"))
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        name = fields.get("model name", platform.processor() or platform.machine())
        if "cpu family" in fields:
            name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
        return name
    except OSError:
        return platform.processor() or platform.machine()
