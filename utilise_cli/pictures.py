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
# Dates per row of panels; longer series wrap onto more rows. In one row, a 70-date series made `explain` draw
# pictures 10,000 px wide (its date-by-date attention 100 megapixels, 70 x 70 maps) in over two minutes.
WRAP_DATES = 12


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


def _date_rows(t: int) -> list[range]:
    """The dates of each row of panels: WRAP_DATES at a time."""
    return [range(i, min(i + WRAP_DATES, t)) for i in range(0, t, WRAP_DATES)]


def before_after_figure(before: np.ndarray, after: np.ndarray, titles: Sequence[str]) -> plt.Figure:
    """Pairs of rows of true-colour images, WRAP_DATES dates a pair: the input (occluded pixels magenta) and the
    filled series.

    before, after: T x 3 x H x W reflectance (RGB order), NaN where there is no value.
    """
    blocks = _date_rows(before.shape[0])
    cols = len(blocks[0])
    fig, axes = plt.subplots(2 * len(blocks), cols, figsize=(1.6 * cols + 0.8, 3.6 * len(blocks)), squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    for b, block in enumerate(blocks):
        for j, i in enumerate(block):
            axes[2 * b, j].imshow(true_colour(before[i]), interpolation="nearest")
            axes[2 * b + 1, j].imshow(true_colour(after[i], (0.0, 0.0, 0.0)), interpolation="nearest")
            axes[2 * b, j].set_title(titles[i], fontsize=7)
        for j in range(len(block), cols):
            axes[2 * b, j].set_axis_off()
            axes[2 * b + 1, j].set_axis_off()
        axes[2 * b, 0].set_ylabel("input", fontsize=8)
        axes[2 * b + 1, 0].set_ylabel("filled", fontsize=8)
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
    """rows x cols attention maps on [0, 1] (viridis), the columns WRAP_DATES at a time (each block of columns
    below the last); key dates where the pixel is occluded are outlined."""
    rows = maps.shape[0]
    blocks = _date_rows(maps.shape[1])
    cols = len(blocks[0])
    fig, axes = plt.subplots(rows * len(blocks), cols, figsize=(1.3 * cols + 1.2, 1.3 * rows * len(blocks) + 0.7),
                             squeeze=False)
    image = None
    for b, block in enumerate(blocks):
        for r in range(rows):
            for j in range(cols):
                ax = axes[b * rows + r, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j >= len(block):
                    ax.set_axis_off()
                    continue
                c = block[j]
                image = ax.imshow(maps[r, c], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
                if (~observed[c]).any():
                    ax.contour(~observed[c], levels=[0.5], colors="magenta", linewidths=0.4)
                if pixel is not None:
                    ax.plot(*pixel, marker="+", color="red", markersize=5)
                if r == 0:
                    ax.set_title(col_titles[c], fontsize=6)
            axes[b * rows + r, 0].set_ylabel(row_labels[r], fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.93, 1), pad=0.3)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01)
    return fig


def _attention_matrix(attention: np.ndarray, dates: Sequence[str], head: int,
                      pixel: tuple[int, int] | None) -> plt.Figure:
    """One head's attention of every target date (row) over every date (column) as one T x T image: the mean
    over the chip, or at ``pixel``. attention: T x T x h x w."""
    at = "at the marked pixel" if pixel is not None else "mean over the chip"
    matrix = attention[:, :, pixel[1], pixel[0]] if pixel is not None else attention.mean(axis=(2, 3))
    t = len(dates)
    side = min(max(0.14 * t + 2.5, 5.0), 14.0)
    fig, ax = plt.subplots(figsize=(side + 1.0, side))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=max(float(matrix.max()), 1e-6), interpolation="nearest")
    step = max(1, -(-t // 24))  # at most about 24 labels a side
    ax.set_xticks(range(0, t, step), [dates[i] for i in range(0, t, step)], rotation=90, fontsize=6)
    ax.set_yticks(range(0, t, step), [dates[i] for i in range(0, t, step)], fontsize=6)
    ax.set_xlabel("dates attended to", fontsize=8)
    ax.set_ylabel("target dates", fontsize=8)
    ax.set_title(f"head {head}: attention of each target date over the dates, {at} (uniform: {1 / t:.3f})",
                 fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    fig.tight_layout(pad=0.4)
    return fig


def attention_heads_figure(attention: np.ndarray, dates: Sequence[str], target: str, observed: np.ndarray,
                           pixel: tuple[int, int] | None = None) -> plt.Figure:
    """Attention of one target date over all key dates, one row per head. attention: heads x T x h x w."""
    return _attention_grid(attention, [f"head {h}" for h in range(attention.shape[0])], dates,
                           f"attention of {target} over the dates (magenta: occluded at that date)", observed, pixel)


def attention_dates_figure(attention: np.ndarray, dates: Sequence[str], head: int, observed: np.ndarray,
                           pixel: tuple[int, int] | None = None) -> plt.Figure:
    """One head: each target date's (row) attention over the key dates (columns). attention: T x T x h x w.
    Maps for up to WRAP_DATES dates; a longer series (T x T maps) as one matrix (:func:`_attention_matrix`)."""
    if len(dates) > WRAP_DATES:
        return _attention_matrix(attention, dates, head, pixel)
    return _attention_grid(attention, [f"{d}" for d in dates], dates,
                           f"head {head}: rows are target dates, columns the dates attended to", observed, pixel)
