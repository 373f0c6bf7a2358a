"""What every notebook app shares: the Run-button ``interactive``, its hint and note lines, the layer list.

:func:`_app` wraps a callback in an ``ipywidgets.interactive`` with a Run button (``manual``, class
``pl-run``), so nothing is computed until it is clicked; after a run ``app.result`` is the Figure. Controls
carry CSS classes (``pl-layer``, ``pl-weight``, ...) for browser tests and are named in ``app.controls``.
Under the button sits one "Try this: ..." line (``app.hint``, an ``ipywidgets.HTML`` with class ``pl-hint``,
default :data:`HINTS` of the app); lines that say what a Run will do are in ``app.notes``. The apps are in
:mod:`perceptlib.widgets` (reconstruction, style transfer) and :mod:`perceptlib.sr_widgets` (super-resolution).
"""
from __future__ import annotations

import html
from collections.abc import Mapping

from .vgg import LAYER_NAMES

__all__ = ["TAP_OPTIONS", "HINTS"]

#: Layers a picker offers: every conv and relu tap, in network order (pools are left out).
TAP_OPTIONS: tuple[str, ...] = tuple(n for n in LAYER_NAMES if not n.startswith("pool"))

#: The default "Try this" line of each app: one sentence on what the paper shows.
HINTS: dict[str, str] = {
    "reconstruction_app":
        "Try this: relu2_2 vs relu4_3 from noise — the deeper layer keeps the layout but loses colour, texture and "
        "exact shape (the paper's Fig. 3).",
    "style_reconstruction_app":
        "Try this: relu1_2 alone, then relu1_2 to relu4_3 — the Gram matrices keep the painting's colours and "
        "textures but not its layout, and deeper layers add larger-scale structure (Fig. 4).",
    "style_transfer_app":
        "Try this: 'network' vs 'optimise' — in the paper the trained network reaches the loss of 50–100 L-BFGS "
        "iterations in one forward pass, about 1000× faster than 500 iterations (Fig. 5, Table 1).",
    "sr_compare_app":
        "Try this: baboon's fur at ×4 — ℓ_pixel is smooth, ℓ_feat keeps texture, although the paper's ℓ_feat "
        "networks score a lower PSNR than bicubic.",
    "sr_train_app":
        "Try this: relu2_2 with pixel weight 0 vs no layer (ℓ_pixel alone) — in the paper ℓ_feat scores a lower "
        "PSNR than ℓ_pixel yet reconstructs sharper edges and finer detail.",
}


def _line(text: str, css: str):
    """A one-line ``ipywidgets.HTML`` showing ``text`` (escaped), hidden while ``text`` is empty."""
    import ipywidgets as W

    w = W.HTML().add_class(css)
    _set_line(w, text)
    return w


def _set_line(w, text: str) -> None:
    w.value = html.escape(text, quote=False)
    w.layout.display = None if text else "none"


def _app(f, controls: dict, hint: str, notes: Mapping[str, object] | None = None):
    """``interactive(f, **controls)`` with a Run button; ``notes`` (name -> HTML line) sit between the
    controls and the button, the ``hint`` line under the button, then the output."""
    import ipywidgets as W

    app = W.interactive(f, {"manual": True, "manual_name": "Run", "auto_display": True}, **controls)
    app.manual_button.add_class("pl-run")
    app.controls = controls
    app.notes = dict(notes or {})
    app.hint = _line(hint, "pl-hint")
    app.last_run = None
    *inputs, button, out = app.children
    app.children = (*inputs, *app.notes.values(), button, app.hint, out)
    return app

