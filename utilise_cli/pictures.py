"""Figures people look at instead of reading numbers: before/after quicklooks of filled series.

Functions return matplotlib figures (for notebooks) or save PNGs (for the command line). Reflectance
is shown as true colour with a fixed stretch (0..0.3 reflectance), so dates are comparable.
"""

from __future__ import annotations


from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .atomic import staged  # noqa: E402

TRUE_COLOUR_MAX = 0.3  # reflectance shown as white
OCCLUDED_RGB = (1.0, 0.0, 1.0)  # magenta marks pixels that were not observed


def rgb_indices(bands: Sequence[str]) -> list[int]:
    """Indices of the red, green and blue bands (B4, B3, B2 in any spelling), else of the first three."""
    from .sentinel2 import band_key

    keys = [band_key(b) for b in bands]
    if all(k in keys for k in ("B4", "B3", "B2")):
        return [keys.index(k) for k in ("B4", "B3", "B2")]
    return [min(i, len(bands) - 1) for i in range(3)]


def true_colour(rgb: np.ndarray, occluded_rgb: Sequence[float] = OCCLUDED_RGB) -> np.ndarray:
    """3 x H x W reflectance (NaN = not observed) -> H x W x 3 image in 0..1."""
    image = np.clip(np.moveaxis(rgb, 0, -1) / TRUE_COLOUR_MAX, 0, 1)
    missing = ~np.isfinite(image).all(axis=-1)
    image = np.nan_to_num(image)
    image[missing] = occluded_rgb
    return image


def before_after_figure(before: np.ndarray, after: np.ndarray, titles: Sequence[str]) -> plt.Figure:
    """Two rows of true-colour images: the input (occluded pixels magenta) and the filled series.

    before, after: T x 3 x H x W reflectance (RGB order), NaN where there is no value.
    """
    t = before.shape[0]
    fig, axes = plt.subplots(2, t, figsize=(1.6 * t + 0.8, 3.6), squeeze=False)
    for i in range(t):
        axes[0, i].imshow(true_colour(before[i]), interpolation="nearest")
        axes[1, i].imshow(true_colour(after[i], (0.0, 0.0, 0.0)), interpolation="nearest")
        axes[0, i].set_title(titles[i], fontsize=7)
    axes[0, 0].set_ylabel("input", fontsize=8)
    axes[1, 0].set_ylabel("filled", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a figure as PNG under a temporary name, then rename (no half-written pictures)."""
    path = Path(path)
    try:
        with staged(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


PREVIEW_PANEL_PX = 420  # each date's panels are at least 400 px wide, whatever the raster's size
PREVIEW_COLUMNS = 3  # dates per row of the grid (each date: input and filled side by side)
# A panel's height over its width at most (and at least): a strip 3 px wide and 165 rows high made a figure 231
# inches tall (23,000 px) that took half a minute; the image keeps its own aspect inside the panel.
PREVIEW_ASPECT = (0.25, 3.0)
SCREENED_RGB = (0.0, 0.9, 1.0)  # cyan: pixels only the cloud screen masked


def fill_preview_figure(before: np.ndarray, after: np.ndarray, flags: np.ndarray, titles: Sequence[str],
                        dpi: int = 100) -> plt.Figure:
    """A grid of dates, each as input | filled in true colour.

    Input: pixels under the given mask magenta, pixels the cloud screen added cyan. Filled: the same areas
    outlined (magenta, cyan), so that the filled parts can be checked against their surroundings.
    before, after: T x 3 x H x W reflectance (RGB, NaN = no value); flags: T x H x W (cog.FLAG_* values).
    """
    from .cog import FLAG_FILLED, FLAG_SCREENED

    t, _, h, w = before.shape
    cols = min(PREVIEW_COLUMNS, t)
    rows = -(-t // cols)
    panel_w = PREVIEW_PANEL_PX / dpi
    panel_h = panel_w * min(max(h / max(w, 1), PREVIEW_ASPECT[0]), PREVIEW_ASPECT[1])
    height = rows * (panel_h + 0.3) + 0.4
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * panel_w, height), dpi=dpi, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for i in range(t):
        left, right = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        image = true_colour(before[i])
        image[flags[i] == FLAG_SCREENED] = SCREENED_RGB
        left.imshow(image, interpolation="nearest")
        right.imshow(true_colour(after[i], (0.0, 0.0, 0.0)), interpolation="nearest")
        for value, colour in ((FLAG_FILLED, OCCLUDED_RGB), (FLAG_SCREENED, SCREENED_RGB)):
            area = flags[i] == value
            if area.any() and not area.all() and min(area.shape) >= 2:  # a contour needs two rows and columns
                right.contour(area, levels=[0.5], colors=[colour], linewidths=0.6)
        left.set_title(f"{titles[i]} input", fontsize=9)
        right.set_title(f"{titles[i]} filled", fontsize=9)
    fig.suptitle("magenta: given mask (and no data), cyan: found by the cloud screen", fontsize=10)
    fig.tight_layout(pad=0.4, rect=(0, 0, 1, 1 - 0.4 / height))
    return fig


def save_fill_preview(before: np.ndarray, after: np.ndarray, flags: np.ndarray, scenes: Sequence,
                      path: str | Path) -> Path:
    """The preview of a fill run (:func:`fill_preview_figure`) as a PNG."""
    titles = [f"{s.date:%Y-%m-%d}" for s in scenes]
    return save_figure(fill_preview_figure(before, after, flags, titles), path, dpi=100)


def triptych_figure(inputs: np.ndarray, predicted: np.ndarray, target: np.ndarray, title: str) -> plt.Figure:
    """Three rows of true colour: input (gaps magenta), prediction, target. Arrays T x 3 x H x W (RGB)."""
    t = inputs.shape[0]
    fig, axes = plt.subplots(3, t, figsize=(1.4 * t + 0.8, 4.6), squeeze=False)
    for i in range(t):
        for row, (images, colour) in enumerate(((inputs, OCCLUDED_RGB), (predicted, (0.0, 0.0, 0.0)),
                                                 (target, (0.0, 0.0, 0.0)))):
            axes[row, i].imshow(true_colour(images[i], colour), interpolation="nearest")
    for row, label in enumerate(("input", "predicted", "target")):
        axes[row, 0].set_ylabel(label, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(pad=0.3)
    return fig


def metrics_figure(values: dict[str, Sequence[float]], series: Sequence[str], ylabel: str) -> plt.Figure:
    """Grouped bars: one group per series, one bar per method."""
    n = max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * n * max(1, len(values)) * 0.5 + 2), 3.0))
    width = 0.8 / max(len(values), 1)
    for i, (method, vals) in enumerate(values.items()):
        ax.bar(np.arange(len(vals)) + i * width, vals, width, label=method)
    ax.set_xticks(np.arange(n) + 0.4 - width / 2)
    ax.set_xticklabels([s[:18] for s in series], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.legend(fontsize=7)
    finite = [v for vals in values.values() for v in vals if np.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) - 2, max(finite) + 1)
    fig.tight_layout()
    return fig


def _attention_grid(maps: np.ndarray, row_labels: Sequence[str], col_titles: Sequence[str], title: str,
                    observed: np.ndarray, pixel: tuple[int, int] | None) -> plt.Figure:
    """rows x cols attention maps on [0, 1] (viridis); key dates where the pixel is occluded are outlined."""
    rows, cols = maps.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1.2, 1.3 * rows + 0.7), squeeze=False)
    image = None
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            image = ax.imshow(maps[r, c], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            if (~observed[c]).any():
                ax.contour(~observed[c], levels=[0.5], colors="magenta", linewidths=0.4)
            if pixel is not None:
                ax.plot(*pixel, marker="+", color="red", markersize=5)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_titles[c], fontsize=6)
        axes[r, 0].set_ylabel(row_labels[r], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.93, 1), pad=0.3)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
    return fig


def attention_heads_figure(attention: np.ndarray, dates: Sequence[str], target: str, observed: np.ndarray,
                           pixel: tuple[int, int] | None = None) -> plt.Figure:
    """Attention of one target date over all key dates, one row per head. attention: heads x T x h x w."""
    return _attention_grid(attention, [f"head {h}" for h in range(attention.shape[0])], dates,
                           f"attention of {target} over the dates (magenta: occluded at that date)", observed, pixel)


def attention_dates_figure(attention: np.ndarray, dates: Sequence[str], head: int, observed: np.ndarray,
                           pixel: tuple[int, int] | None = None) -> plt.Figure:
    """One head: each target date's (row) attention over the key dates (columns). attention: T x T x h x w."""
    return _attention_grid(attention, [f"{d}" for d in dates], dates,
                           f"head {head}: rows are target dates, columns the dates attended to", observed, pixel)
