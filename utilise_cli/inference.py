"""Filling a batch of chips: the network (with temporal windows for long series) or a baseline.

A predictor takes reflectance B x T x C x h x w (0..1, anything where not observed), observed
B x T x h x w (bool) and days T, and returns B x T x C x h x w reflectance (NaN only where a baseline
has no observation at all).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .baselines import interpolate, interpolate_tensor, one_channel_more
from .chips import dates_to_fill, ramp_window
from .hardware import resolve_precision
from .network import UTILISE


class Predictor(Protocol):
    """Fills a batch: reflectance B x T x C x H x W (0..1, NaN = no data), observed B x T x H x W (bool), days T
    (day of year) -> B x T x C x H x W. It must not write into its inputs: a fill's batches can be views of one
    stripe in which neighbouring chips overlap (chips.chip_batch)."""

    name: str

    def __call__(self, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray) -> np.ndarray: ...


def time_windows(length: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, stop) of temporal windows covering ``length`` dates; the last one ends at ``length``."""
    if window <= 0 or length <= window:
        return [(0, length)]
    step = max(1, window - overlap)
    starts = list(range(0, length - window, step)) + [length - window]
    return [(s, s + window) for s in starts]


def network_input_tensor(reflectance: torch.Tensor, hidden: torch.Tensor, days: torch.Tensor | None = None,
                         residual: str = "") -> torch.Tensor:
    """What the network was trained to see, from reflectance ... x T x C x H x W (0..1, NaN = no data, float32)
    and ``hidden`` ... x T x H x W (True = gap), on any device; leading axes are chips, done together.

    The original networks see every channel set to 1.0 where a pixel is hidden or has no data. A residual
    network (NetworkConfig.residual, a baseline name) sees the series with those pixels filled by that
    baseline along ``days`` (day of year, T) and one more channel, 1.0 where they were: C + 1 channels."""
    if not residual:
        blank = hidden.unsqueeze(-3) | reflectance.isnan()
        return torch.where(blank, 1.0, reflectance).clamp(0, 1)
    if days is None:
        raise ValueError("a residual network needs the days of the series to interpolate its gaps")
    blank = hidden | reflectance.amax(dim=-3).isnan()  # amax keeps a NaN of any band: 4x cheaper than any()
    filled = interpolate_tensor(residual, reflectance, ~blank, days)  # the NaN are among the gaps it fills
    out, c = one_channel_more(filled), filled.shape[-3]
    # A pixel never observed gets the gap value.
    torch.nan_to_num(filled, nan=1.0, out=out[..., :c, :, :]).clamp_(0, 1)
    out[..., c, :, :] = blank
    return out


def network_input(reflectance: np.ndarray, hidden: np.ndarray, days: np.ndarray | None = None,
                  residual: str = "") -> np.ndarray:
    """:func:`network_input_tensor` on numpy arrays (on the CPU); returns float32."""
    with torch.inference_mode():
        x = network_input_tensor(torch.from_numpy(np.ascontiguousarray(reflectance, np.float32)),
                                 torch.from_numpy(np.ascontiguousarray(hidden, bool)),
                                 None if days is None else torch.from_numpy(np.asarray(days, np.float32)), residual)
    return x.numpy()


def model_input(model: UTILISE, reflectance: np.ndarray, hidden: np.ndarray, days: np.ndarray) -> np.ndarray:
    """network_input as ``model`` was trained to see it."""
    return network_input(reflectance, hidden, days, model.config.residual)


def to_device(array: np.ndarray, device: torch.device, dtype: np.dtype | type = np.float32) -> torch.Tensor:
    """A numpy array as a tensor on ``device``; through pinned memory to a GPU, so that the copy overlaps. On the
    CPU a view of the array, whatever its strides (a batch of chips that are views of one stripe stays one)."""
    if device.type == "cpu":
        return torch.from_numpy(np.asarray(array, dtype=dtype))
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _mirror_index(size: int, padded: int, device: torch.device) -> torch.Tensor:
    """Indices 0..padded-1 into an axis of ``size``, mirrored past its end like numpy's pad mode 'symmetric'
    (... c b a | a b c | c b a ...), for any amount of padding."""
    index = torch.arange(padded, device=device) % (2 * size)
    return torch.where(index >= size, 2 * size - 1 - index, index)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION_CHOICES = ("auto", *PRECISIONS)


@contextlib.contextmanager
def _cudnn_tf32(allowed: bool) -> Iterator[None]:
    """cuDNN convolutions in TF32 only when asked for reduced precision: torch allows TF32 by default, which
    would make 'fp32' on a GPU differ from the CPU by about 1e-3."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = before


def run_network(model: UTILISE, x: np.ndarray | torch.Tensor, days: np.ndarray, precision: str = "fp32",
                decode: np.ndarray | None = None) -> np.ndarray:
    """Network output for input x B x T x C x H x W (gaps already set to 1; numpy, or a tensor on the model's
    device) and days T or B x T; ``decode`` B x T bool: only those frames decoded, the others 0 (default: all).

    H and W of any size: the input is mirrored up to the network's size multiple (and to at least two pixels at its
    coarsest level, where reflect padding mirrors one pixel over the next) and the output cropped.
    ``precision`` bf16 / fp16 runs under autocast (faster on GPUs with tensor cores and on CPUs with AMX; costs
    a little accuracy); auto picks bf16 where the hardware has it (:func:`resolve_precision`)."""
    device = next(model.parameters()).device
    inputs = x if isinstance(x, torch.Tensor) else to_device(x, device)
    b, t, c, h, w = inputs.shape
    m = model.config.size_multiple
    # A raster 3 px wide (or a chip of 8 px) would leave its coarsest level one pixel wide, which reflect padding
    # cannot mirror: at least 2 * m px.
    padded_h, padded_w = (max(n + -n % m, 2 * m) for n in (h, w))
    if (padded_h, padded_w) != (h, w):
        inputs = inputs.index_select(-2, _mirror_index(h, padded_h, device))
        inputs = inputs.index_select(-1, _mirror_index(w, padded_w, device))
    positions = torch.as_tensor(np.asarray(days, np.float32), device=device).expand(b, t)
    dtype = PRECISIONS[resolve_precision(precision, device.type)]
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None), \
            _cudnn_tf32(dtype is not None):
        out = model(inputs, positions, decode=None if decode is None else torch.from_numpy(decode)
                    ).float().cpu().numpy()
    return out[..., :h, :w].clip(0, 1)  # a residual network's sum can leave 0..1


@dataclass
class NetworkPredictor:
    """U-TILISE on chips; occluded pixels are set to 1.0 as the network was trained to expect.

    The network decodes only a chip's dates with something to fill (a pixel not observed then but on another
    date), unless ``every_date`` (outputs that replace observed pixels too). The others keep their input: NaN where
    a pixel is never observed, which no output keeps, and otherwise observed pixels, which every output keeps."""

    model: UTILISE
    window: int = 0
    window_overlap: int = 2
    precision: str = "fp32"
    name: str = "utilise"
    every_date: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray) -> np.ndarray:
        b, t, c, h, w = reflectance.shape
        device = self.device
        # The input is made where the network runs: on a GPU the residual's interpolation costs little there,
        # and on the CPU's threads it was most of a GPU fill's network time (H100, 1024^2: 6 of 7.4 s).
        with torch.inference_mode():
            x = network_input_tensor(to_device(reflectance, device), to_device(~observed, device, bool),
                                     to_device(days, device), self.model.config.residual)
        decode = None if self.every_date else dates_to_fill(observed)  # B x T
        windows = time_windows(t, self.window, self.window_overlap)
        if len(windows) == 1:  # every date in one pass: its output as it is, not summed and divided by 1
            out = self._run(x, days, decode)
        else:
            total = np.zeros((b, t, self.model.config.output_dim, h, w), dtype=np.float32)
            weight = np.zeros(t, dtype=np.float32)
            for start, stop in windows:
                ramp = self._time_ramp(start, stop, t)
                part = self._run(x[:, start:stop], days[start:stop], None if decode is None else decode[:, start:stop])
                total[:, start:stop] += part * ramp.reshape(-1, 1, 1, 1)
                weight[start:stop] += ramp
            out = total / weight.reshape(1, t, 1, 1, 1)
        if decode is not None:
            kept = ~decode
            out[kept] = np.where(observed[kept][:, None], reflectance[kept], np.float32(np.nan))
        return out

    def _time_ramp(self, start: int, stop: int, length: int) -> np.ndarray:
        """Weights of a temporal window's dates: ramped where it overlaps a neighbour, 1 at the series ends."""
        ramp = np.ones(stop - start, dtype=np.float32)
        if stop - start == length:
            return ramp
        n = min(self.window_overlap, (stop - start) // 2)
        shaped = ramp_window(stop - start, n)
        if start > 0:
            ramp[:n] = shaped[:n]
        if stop < length:
            ramp[len(ramp) - n:] = shaped[len(ramp) - n:]
        return ramp

    def _run(self, x: torch.Tensor, days: np.ndarray, decode: np.ndarray | None) -> np.ndarray:
        return run_network(self.model, x, days, self.precision, decode)


@dataclass
class BaselinePredictor:
    """Per-pixel interpolation along time (a method of baselines.METHODS)."""

    method: str = "linear"

    @property
    def name(self) -> str:
        return self.method

    def __call__(self, reflectance: np.ndarray, observed: np.ndarray, days: np.ndarray) -> np.ndarray:
        return np.stack([interpolate(self.method, r, o, days) for r, o in zip(reflectance, observed)])


@contextlib.contextmanager
def chip_workers(workers: int) -> Iterator[ThreadPoolExecutor]:
    """``workers`` threads that each run the network on one chip at a time, the cores shared out among them
    (torch's threads per forward pass: its number divided by ``workers``, restored afterwards). Two chips on one
    core each outran one chip on two: 24 chips of 10 dates, shipped network in bf16, 2.48-2.65 against
    2.87-3.04 s (2-core AMD EPYC), as torch's two threads wait for each other between operations; and the cores
    they leave are used by whatever else runs meanwhile, which one chip's spinning threads would hold. On an
    error, chips not yet begun are dropped."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    pool = ThreadPoolExecutor(workers, thread_name_prefix="utilise-network")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(threads)
