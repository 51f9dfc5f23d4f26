"""Figures of the write-up: labelled image grids, clean/noisy/denoised rows, loss curves.

Every function returns the matplotlib ``Figure``; in a notebook end the line with ``;`` and the
inline backend shows it once.  Images are ``(N, C, H, W)`` tensors (or a list of ``(C, H, W)``)
with values in [0, 1]; they are clamped for display.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_numpy_image(img) -> np.ndarray:
    img = torch.as_tensor(img).detach().float().cpu().clamp(0, 1)
    if img.dim() == 3:
        img = img.permute(1, 2, 0)            # (H, W, C)
        if img.shape[-1] == 1:
            img = img[..., 0]
    return img.numpy()


def show_grid(images, nrow: int | None = None, *, row_labels: Sequence[str] | None = None,
              col_labels: Sequence[str] | None = None, titles: Sequence[str] | None = None,
              title: str | None = None, scale: float = 1.1):
    """Images in a grid of ``nrow`` rows (row-major), with optional row, column or per-image labels."""
    images = list(images)
    n = len(images)
    if n == 0:
        raise ValueError("show_grid got no images")
    nrow = nrow or 1
    ncol = -(-n // nrow)
    fig, axes = plt.subplots(nrow, ncol, figsize=(scale * ncol + (0.9 if row_labels else 0), scale * nrow + 0.3),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
        if i < n:
            ax.imshow(to_numpy_image(images[i]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if col_labels is not None:
        for c, label in enumerate(col_labels):
            axes[0, c].set_title(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def show_rows(rows: dict, col_labels: Sequence[str] | None = None, title: str | None = None,
              scale: float = 1.1):
    """One row per entry of ``rows`` (label -> images ``(N, C, H, W)``), e.g. clean/noisy/denoised."""
    labels = list(rows)
    widths = {len(v) for v in rows.values()}
    if len(widths) != 1:
        raise ValueError(f"every row needs the same number of images, got {[len(v) for v in rows.values()]}")
    images = [img for label in labels for img in rows[label]]
    return show_grid(images, nrow=len(labels), row_labels=labels, col_labels=col_labels, title=title,
                     scale=scale)


def plot_losses(losses: Sequence[float], epoch_ends: Sequence[int] | None = None, title: str = "training loss",
                log: bool = True, smooth: int = 0, label: str = "per step",
                compare: dict[str, Sequence[float]] | None = None):
    """Loss per step (log scale by default), with dotted lines at epoch boundaries and an optional
    moving average over ``smooth`` steps.  ``compare``: other runs' losses per step by name, drawn as
    their moving average over ``smooth`` steps (or as they are with ``smooth=0``) on the same axes."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.5 if smooth else 1.0, label=label)
    if smooth and len(losses) >= smooth:
        ax.plot(*_moving_average(losses, smooth), lw=1.5, label=f"mean of {smooth} steps")
    for name, other in (compare or {}).items():
        other = np.asarray(other, dtype=float)
        if smooth and len(other) >= smooth:
            ax.plot(*_moving_average(other, smooth), lw=1.5, label=f"{name}, mean of {smooth} steps")
        else:
            ax.plot(np.arange(1, len(other) + 1), other, lw=1.0, label=name)
    if (smooth and len(losses) >= smooth) or compare:
        ax.legend(fontsize=8)
    for e in epoch_ends or []:
        ax.axvline(e, color="grey", ls=":", lw=0.8)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step" + (" (dotted: end of an epoch)" if epoch_ends else ""))
    ax.set_ylabel("MSE loss")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def _moving_average(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps ``k .. len(values)`` and the mean of the ``k`` losses up to each."""
    return np.arange(k, len(values) + 1), np.convolve(values, np.ones(k) / k, mode="valid")


def plot_curve(x, ys: dict, xlabel: str, ylabel: str, title: str = ""):
    """Several named curves over the same x (e.g. error against sigma)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, y in ys.items():
        ax.plot(x, y, marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
