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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perceptlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_weights(sub)
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
