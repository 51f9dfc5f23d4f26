"""Explorers: a control a learner moves, and the picture that answers at once.

An explorer is one call from a notebook cell.  It takes ``render(**setting)``, which returns the
pictures of one setting of the controls, and ``controls`` (name -> the values a control offers).
When the cell runs, every setting of the grid is rendered once (with a progress bar) and encoded as a
PNG, so moving a control only swaps bytes: no model runs and no figure is drawn while the learner
plays (``benchmarks/bench_explorers.py`` measures the answer).

Displaying an explorer leaves two outputs:
  * a static figure of a few settings (one row each): what papermill, nbval and the HTML pages show,
    where no widget runs;
  * the widget (ipywidgets): one slider per control, the picture and a caption line.  Every setting's
    picture is in the widget and the sliders pick one in the browser (``jslink``), so the explorer
    answers without the kernel, also in a notebook saved with its widget state and opened again.  Its
    plain-text fallback says to open the notebook in JupyterLab, so a stored notebook shows no stale
    widget.

Conventions: pictures are ``(N, C, H, W)`` tensors in [0, 1] (C = 1 or 3), laid out in ``nrow`` rows;
a render returns the tensor, or ``(tensor, caption)``.
"""
from __future__ import annotations

import io
import itertools
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from diffnb.core.progress import progress

#: CSS class of every explorer's outer box (the browser test finds explorers by it)
CSS_CLASS = "diffnb-explorer"


@dataclass(frozen=True)
class Frame:
    """One setting's pictures ``(N, C, H, W)`` in [0, 1] and a caption line."""
    images: torch.Tensor
    caption: str = ""


def _check_images(images, setting) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"an explorer's render returned {got} for {setting}; expected images (N, C, H, W) "
                         "with C = 1 or 3 in [0, 1] (or a tuple (images, caption))")
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise ValueError(f"an explorer's render returned non-finite pixels for {setting}")
    return images.clamp(0, 1)


def tile(images: torch.Tensor, nrow: int = 1, tile_px: int = 112, gap: int = 4) -> np.ndarray:
    """Pictures ``(N, C, H, W)`` in [0, 1] as one uint8 RGB array, ``nrow`` rows, each picture scaled up
    (nearest neighbour) so its longer side is about ``tile_px`` pixels, white gaps between."""
    n, c, h, w = images.shape
    ncol = -(-n // nrow)
    k = max(1, round(tile_px / max(h, w)))
    big = images.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)        # (N, C, kH, kW)
    if c == 1:
        big = big.expand(-1, 3, -1, -1)
    H, W = h * k, w * k
    canvas = np.full((nrow * H + (nrow - 1) * gap, ncol * W + (ncol - 1) * gap, 3), 255, np.uint8)
    pix = (big.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)      # (N, kH, kW, 3)
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[r * (H + gap):r * (H + gap) + H, col * (W + gap):col * (W + gap) + W] = pix[i]
    return canvas


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


class Explorer:
    """Every setting of ``controls`` rendered once; a widget and a static figure over them.

    Args:
        render: ``render(**setting) -> images`` or ``(images, caption)``; ``setting`` maps each control's
            name to one of its values.
        controls: control name -> the values it offers (a list of at least one value; numbers, strings
            or any value ``str()`` labels).
        static: the settings the static figure shows, one row each (default: up to four settings spread
            over the first control, the other controls at their first value).
        nrow: rows of each setting's pictures in the widget.
        title: the static figure's title and the widget's heading.
        tile_px: on-screen size of one picture in the widget.
    """

    def __init__(self, render: Callable[..., object], controls: dict[str, Sequence], *, static=None,
                 nrow: int = 1, title: str = "", tile_px: int = 112, desc: str = "explorer"):
        if not isinstance(controls, dict) or not controls:
            raise ValueError("an explorer needs at least one control: controls={'name': [value, ...]}")
        self.controls = {}
        for name, values in controls.items():
            values = list(values)
            if not values:
                raise ValueError(f"control {name!r} offers no values; give it a list such as [1, 2, 3]")
            if len({repr(v) for v in values}) != len(values):
                raise ValueError(f"control {name!r} offers a value twice: {values}")
            self.controls[name] = values
        self.nrow, self.title, self.tile_px = int(nrow), title, int(tile_px)
        names = list(self.controls)
        settings = [dict(zip(names, combo)) for combo in itertools.product(*self.controls.values())]
        self.frames: dict[tuple, Frame] = {}
        for setting in progress(settings, desc=desc, leave=False):
            out = render(**setting)
            images, caption = out if isinstance(out, tuple) else (out, "")
            self.frames[self._key(setting)] = Frame(_check_images(images, setting), str(caption))
        self.static = [self._full(s) for s in (static if static is not None else self._default_static())]
        self._png: dict[tuple, bytes] = {}
        self._widget = None

    # ------------------------------------------------------------------ settings
    def _key(self, setting: dict) -> tuple:
        return tuple(repr(setting[name]) for name in self.controls)

    def _full(self, setting: dict) -> dict:
        unknown = set(setting) - set(self.controls)
        if unknown:
            raise ValueError(f"unknown control(s) {sorted(unknown)}; this explorer has {list(self.controls)}")
        full = {name: setting.get(name, values[0]) for name, values in self.controls.items()}
        if self._key(full) not in self.frames:
            raise ValueError(f"setting {full} is not on the explorer's grid {self.controls}")
        return full

    def _default_static(self) -> list[dict]:
        first, values = next(iter(self.controls.items()))
        picks = sorted({round(i * (len(values) - 1) / 3) for i in range(4)}) if len(values) > 4 else range(len(values))
        return [{first: values[i]} for i in picks]

    def frame(self, **setting) -> Frame:
        return self.frames[self._key(self._full(setting))]

    def png(self, **setting) -> bytes:
        """The widget's picture of one setting (encoded on first use, then cached)."""
        key = self._key(self._full(setting))
        if key not in self._png:
            self._png[key] = png_bytes(tile(self.frames[key].images, self.nrow, self.tile_px))
        return self._png[key]

    # ------------------------------------------------------------------ outputs
    def figure(self):
        """The static figure: one row per setting of ``self.static``, its caption above the row."""
        import matplotlib.pyplot as plt
        from diffnb.core.plotting import to_numpy_image

        frames = [self.frames[self._key(s)] for s in self.static]
        width = max(len(f.images) for f in frames)
        fig, axes = plt.subplots(len(frames), width, squeeze=False,
                                 figsize=(max(1.15 * width, 5.0), 1.35 * len(frames) + (0.35 if self.title else 0.1)))
        for r, (setting, f) in enumerate(zip(self.static, frames)):
            for col, ax in enumerate(axes[r]):
                ax.axis("off")
                if col < len(f.images):
                    ax.imshow(to_numpy_image(f.images[col]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[r, 0].set_title(self._label(setting, f), loc="left", fontsize=8.5)
        if self.title:
            fig.suptitle(self.title, fontsize=10.5)
        with warnings.catch_warnings():         # a caption wider than its row: the layout is still readable
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
        return fig

    def _label(self, setting: dict, frame: Frame) -> str:
        return frame.caption or ", ".join(f"{k} = {v}" for k, v in setting.items())

    def widget(self):
        """The ipywidgets box: a slider per control over every setting's picture and caption (built once).

        Every setting's picture is in the box: nested ``Stack``s, one level per control, each level's
        ``selected_index`` linked in the browser (``jslink``) to its slider's ``index``.  So a moved
        slider shows its picture without a round trip to the kernel, and a notebook saved with its
        widget state still answers its sliders when opened again, with no kernel at all."""
        if self._widget is not None:
            return self._widget
        import ipywidgets as w

        sliders = {name: w.SelectionSlider(options=[(str(v), v) for v in values], value=values[0],
                                           description=name, continuous_update=True,
                                           layout=w.Layout(width="460px"),
                                           style={"description_width": "110px"})
                   for name, values in self.controls.items()}
        names = list(self.controls)
        stacks: list[list] = [[] for _ in names]        # per control: every Stack that control selects in

        def build(level: int, chosen: tuple):
            if level == len(names):
                setting = dict(zip(names, chosen))
                width = tile(self.frame(**setting).images, self.nrow, self.tile_px).shape[1]
                image = w.Image(value=self.png(**setting), format="png", width=str(width))  # its own size
                return w.VBox([image, w.HTML(value=self._caption_html(setting))])
            stack = w.Stack([build(level + 1, chosen + (v,)) for v in self.controls[names[level]]],
                            selected_index=0)
            stacks[level].append(stack)
            return stack

        pictures = build(0, ())
        for level, name in enumerate(names):
            for stack in stacks[level]:
                w.jslink((sliders[name], "index"), (stack, "selected_index"))   # in the browser, no kernel

            def follow(change, level=level):            # the same in the kernel, when Python moves a slider
                for stack in stacks[level]:
                    stack.selected_index = change["new"]
            sliders[name].observe(follow, names="index")
        children = ([w.HTML(f"<b>{self.title}</b>")] if self.title else []) + list(sliders.values()) + [pictures]
        box = w.VBox(children)
        box.add_class(CSS_CLASS)
        self._widget, self.sliders, self._pictures = box, sliders, pictures
        return box

    def _shown(self):
        node = self._pictures
        while node.__class__.__name__ == "Stack":
            node = node.children[node.selected_index]
        return node

    @property
    def image(self):
        """The ``ipywidgets.Image`` the widget shows now (the selected picture of every Stack)."""
        return self._shown().children[0]

    @property
    def caption(self):
        """The caption ``ipywidgets.HTML`` under the picture shown now."""
        return self._shown().children[1]

    def _caption_html(self, setting: dict) -> str:
        import html
        return f"<span class='{CSS_CLASS}-caption'>{html.escape(self.frame(**setting).caption)}</span>"

    def _ipython_display_(self):
        from IPython.display import display
        import matplotlib.pyplot as plt

        fig = self.figure()
        display(fig)
        plt.close(fig)
        try:
            box = self.widget()
        except ImportError:                     # no ipywidgets: the static figure is all there is
            return
        display({"application/vnd.jupyter.widget-view+json":
                 {"version_major": 2, "version_minor": 0, "model_id": box.model_id},
                 "text/plain": f"[explorer: {', '.join(self.controls)}; run the cell in JupyterLab to move "
                               "the controls; the figure above shows a few settings]"}, raw=True)


def explore(render: Callable[..., object], controls: dict[str, Sequence], **kwargs) -> Explorer:
    """Build an ``Explorer`` (see its docstring); as the last line of a cell it shows itself."""
    return Explorer(render, controls, **kwargs)
