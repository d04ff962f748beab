"""``utilise explain``: run the network on one chip and show which dates it drew from (bottleneck attention).

The attention of U-TILISE is per head, per target date, a distribution over all dates (it sums to 1 over the
key dates) at each bottleneck pixel; here it is resized to the chip exactly as the network resizes it for
its skip connections.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .chips import chip_starts
from .cube import open_folder, read_rows
from .datasets.store import DatasetFile
from .errors import SceneError
from .inference import model_input
from .network import UTILISE
from .network.utilise import resize_matrix
from .options import ReadOptions
from .sentinel2 import DEFAULT_BANDS


@dataclass
class Explanation:
    """One chip: inputs T x C x h x w (NaN where not observed), observed T x h x w, filled T x C x h x w,
    attention heads x T (target) x T (key) x h x w, and where the chip lies in the raster (row, col)."""

    name: str
    dates: list[dt.date]
    bands: list[str]
    inputs: np.ndarray
    observed: np.ndarray
    filled: np.ndarray
    attention: np.ndarray
    origin: tuple[int, int] = (0, 0)
    pixel: tuple[int, int] | None = None  # (x, y) inside the chip

    def date_index(self, date: str | dt.date | None) -> int:
        """Index of ``date`` (ISO text or date); None -> the date with most occluded pixels."""
        if date is None:
            return int(np.argmax((~self.observed).sum(axis=(1, 2))))
        wanted = dt.date.fromisoformat(date) if isinstance(date, str) else date
        if wanted not in self.dates:
            raise SceneError(f"--date {wanted} is not in the series ({self.dates[0]} .. {self.dates[-1]}, "
                             f"{len(self.dates)} dates); pass one of its dates")
        return self.dates.index(wanted)


def explain_chip(model: UTILISE, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray,
                 dates: list[dt.date], bands: list[str], name: str) -> Explanation:
    """Run the network on one chip (H, W multiples of the network's size multiple)."""
    x = model_input(model, reflectance, ~observed, days)
    device = next(model.parameters()).device
    with torch.inference_mode():
        out, attention = model(torch.from_numpy(x)[None].to(device),
                               torch.as_tensor(days, dtype=torch.float32, device=device)[None], return_attention=True)
    att = attention[:, 0].double().cpu()  # heads x T x T x h' x w'
    h, w = x.shape[-2:]
    rows = resize_matrix(att.shape[-2], h, torch.float64, torch.device("cpu"))
    cols = resize_matrix(att.shape[-1], w, torch.float64, torch.device("cpu"))
    att = torch.einsum("Yy,gtsyx,Xx->gtsYX", rows, att, cols).float().numpy()
    inputs = np.where(observed[:, None], reflectance, np.nan)
    return Explanation(name, list(dates), list(bands), inputs, observed, out[0].float().cpu().numpy(), att)


def explain_scenes(model: UTILISE, folder: str | Path, chip_size: int = 128, chip: int | None = None,
                   pixel: tuple[int, int] | None = None, bands: list[str] | None = None,
                   read: ReadOptions = ReadOptions()) -> Explanation:
    """One chip of a scene folder, decoded as ``fill`` decodes it with the same ``read`` options: chip number
    ``chip`` (row-major, no overlap), the chip centred on ``pixel`` (x = column, y = row), or by default the
    chip with most occluded pixels."""
    bands = bands or list(model.metadata.get("bands") or DEFAULT_BANDS)
    cube = open_folder(folder, bands, read)
    height, width = cube.grid.height, cube.grid.width
    m = model.config.size_multiple
    size = min(chip_size, height // m * m, width // m * m)
    if size < m:
        raise SceneError(f"{folder}: the rasters ({width} x {height} px) are smaller than one chip")
    origins = [(r, c) for r in chip_starts(height, size, 0) for c in chip_starts(width, size, 0)]
    inside = None
    if pixel is not None:
        x, y = pixel
        if not (0 <= x < width and 0 <= y < height):
            raise SceneError(f"--pixel {x},{y} is outside the raster ({width} x {height} px; x is the column, "
                             "y the row, from 0)")
        origin = (min(max(y - size // 2, 0), height - size), min(max(x - size // 2, 0), width - size))
        inside = (x - origin[1], y - origin[0])
    elif chip is not None:
        if not 0 <= chip < len(origins):
            raise SceneError(f"--chip {chip} does not exist: the raster has chips 0..{len(origins) - 1} of {size} px")
        origin = origins[chip]
    else:
        _, observed = read_rows(cube, 0, height)
        origin = max(origins, key=lambda o: int((~observed[:, o[0]:o[0] + size, o[1]:o[1] + size]).sum()))
    reflectance, observed = read_rows(cube, origin[0], origin[0] + size, origin[1], origin[1] + size)
    expl = explain_chip(model, reflectance, observed, cube.days, cube.dates, bands, Path(folder).name)
    expl.origin, expl.pixel = origin, inside
    return expl


def explain_dataset(model: UTILISE, path: str | Path, sequence: str | None = None,
                    ratio_key: str | None = None) -> Explanation:
    """One series of a dataset file: its simulated gaps (simulated files) or its real cloud mask."""
    with DatasetFile(path) as data:
        name = sequence or data.names[0]
        if name not in data.names:
            raise SceneError(f"{path}: no series {name!r}; it holds {', '.join(data.names[:5])}")
        item = data.read(name)
    s = item.series
    hidden = s.cloud_mask > 0
    if item.gaps:
        hidden = hidden | item.gaps[ratio_key or sorted(item.gaps)[0]].mask
    m = model.config.size_multiple
    h, w = s.frames.shape[-2] // m * m, s.frames.shape[-1] // m * m
    target = s.frames[..., :h, :w]
    observed = ~hidden[..., :h, :w] & ~np.isnan(target).any(axis=1)
    reflectance = np.where(observed[:, None], target, np.nan)
    return explain_chip(model, reflectance, observed, s.days, s.dates, s.bands, name)


def attention_to_occluded(expl: Explanation) -> dict[str, Any]:
    """At occluded places (target date t, pixel p not observed), the mean attention a single key date gets
    when p is occluded at that date versus when it is clear, averaged over heads."""
    att = expl.attention.mean(axis=0)  # T x T x h x w
    t = att.shape[0]
    hidden = ~expl.observed
    occluded_sum = clear_sum = 0.0
    occluded_n = clear_n = 0
    for target in range(t):
        where = hidden[target]
        if not where.any():
            continue
        weights = att[target][:, where]  # keys x pixels
        key_hidden = hidden[:, where]
        occluded_sum += float(weights[key_hidden].sum())
        occluded_n += int(key_hidden.sum())
        clear_sum += float(weights[~key_hidden].sum())
        clear_n += int((~key_hidden).sum())
    return {"occluded_key_mean": occluded_sum / occluded_n if occluded_n else float("nan"),
            "clear_key_mean": clear_sum / clear_n if clear_n else float("nan"),
            "uniform": 1.0 / t, "occluded_places": int(hidden.sum())}


def write_figures(expl: Explanation, out: str | os.PathLike, date: str | dt.date | None = None,
                  head: int = 0) -> list[Path]:
    """series.png, attention_<date>.png (every head) and attention_head<k>.png (every target date)."""
    from .pictures import attention_dates_figure, attention_heads_figure, before_after_figure, rgb_indices, save_figure

    target = expl.date_index(date)
    if not 0 <= head < expl.attention.shape[0]:
        raise SceneError(f"--head {head} does not exist; the network has heads 0..{expl.attention.shape[0] - 1}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rgb = rgb_indices(expl.bands)
    titles = [f"{d:%Y-%m-%d}" for d in expl.dates]
    marker = expl.pixel
    return [
        save_figure(before_after_figure(expl.inputs[:, rgb], expl.filled[:, rgb], titles), out / "series.png"),
        save_figure(attention_heads_figure(expl.attention[:, target], titles, titles[target], expl.observed, marker),
                    out / f"attention_{expl.dates[target]:%Y%m%d}.png"),
        save_figure(attention_dates_figure(expl.attention[head], titles, head, expl.observed, marker),
                    out / f"attention_head{head}.png"),
    ]

