"""The options of reading scenes and of filling them: plain dataclasses that check themselves.

One place states each default: the command line reads its defaults from here. Nothing heavy is imported, so
``utilise --help`` stays quick.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import OptionError, SceneError
from .sentinel2 import SCL_OCCLUDED

MASK_KINDS = ("auto", "binary", "scl", "probability", "fmask", "none")
METHODS = ("auto", "utilise", "linear", "adjusted", "closest", "last", "next")  # baselines.METHODS + networks
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = ("uint16", "float32")
COMPRESSIONS = ("deflate", "zstd")  # of the output COGs
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_MASK_PATTERN = (r"(?i)(^|[_\-.])(mask|masks|cloud|clouds|cloudmask|clm|cld|scl|cldprb|clp|fmask|qa60)"
                        r"([_\-.]|$)")


@dataclass(frozen=True)
class ReadOptions:
    """How a folder of scenes is decoded: the same for ``fill``, ``explain`` and ``prepare geotiff``."""

    scale: float | None = None  # reflectance = DN * scale + offset; None: 1e-4 for DN, 1 for float reflectance
    offset: float | None = None  # None: from the BOA_ADD_OFFSET tag where present, else 0 (harmonised data)
    nodata: float | None = None  # input nodata DN; None: the file's nodata, else 0
    mask_pattern: str = DEFAULT_MASK_PATTERN  # regex that marks mask files by name
    mask_folder: str | None = None  # folder of the masks (any names); None: a subfolder named as masks, if any
    band_names: tuple[str, ...] = ()  # the multi-band scenes' bands in file order, for scenes without descriptions
    date_pattern: str | None = None  # regex with groups year, month, day (or doy); None: the usual forms
    mask_kind: str = "auto"  # auto | binary | scl | probability | none (the screen alone makes the masks)
    mask_band: str | None = None  # mask band inside the scenes; None: SCL, MSK_CLDPRB, ...
    cloud_threshold: float = 50.0  # probability masks: occluded at or above this value (0..100)
    scl_classes: tuple[int, ...] = SCL_OCCLUDED  # SCL classes counted as occluded
    mask_buffer: int = 1  # pixels every given cloud mask grows by (a square), for rims the masks miss
    align: bool = False  # reproject scenes on other grids onto the first scene's grid
    screen: bool = True  # add the clouds and shadows the masks miss (utilise_cli.screen)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scl_classes", tuple(int(c) for c in self.scl_classes))
        object.__setattr__(self, "band_names", tuple(self.band_names))
        if self.scale is not None and not self.scale > 0:
            raise SceneError(f"--scale {self.scale:g} must be positive (reflectance = DN x scale + offset, "
                             "usually 0.0001)")
        if self.mask_kind not in MASK_KINDS:
            raise SceneError(f"--mask-kind {self.mask_kind!r} is not one of {', '.join(MASK_KINDS)}")
        if not 0 <= self.cloud_threshold <= 100:
            raise SceneError(f"--cloud-threshold {self.cloud_threshold:g} must be within 0..100 (percent)")
        if self.mask_buffer < 0:
            raise SceneError(f"--mask-buffer {self.mask_buffer} must be 0 or more pixels")
        for option, pattern in (("--mask-pattern", self.mask_pattern), ("--date-pattern", self.date_pattern)):
            try:
                re.compile(pattern or "")
            except re.error as err:
                raise SceneError(f"{option} {pattern!r} is not a valid regular expression ({err})") from None


@dataclass(frozen=True)
class StacOptions:
    """How the items of a STAC input are put on one grid, and which assets hold the bands (STAC input only)."""

    crs: str | None = None  # output CRS (e.g. EPSG:32633); None: the first item's
    resolution: float | None = None  # pixel size in units of the CRS (metres for UTM); None: the first item's
    bbox: tuple[float, float, float, float] | None = None  # west, south, east, north in degrees (lon/lat)
    assets: tuple[str, ...] = ()  # BAND=ASSET pairs for asset names that are not recognised (e.g. B04=red_10m)

    def __post_init__(self) -> None:
        object.__setattr__(self, "assets", tuple(self.assets))
        if self.resolution is not None and not self.resolution > 0:
            raise OptionError(f"--resolution {self.resolution:g} must be a positive pixel size (metres for UTM)")
        if self.bbox is not None:
            west, south, east, north = self.bbox
            if not (-180 <= west < east <= 180 and -90 <= south < north <= 90):
                raise OptionError(f"--bbox {west:g} {south:g} {east:g} {north:g} must be west south east north in "
                                  "degrees, west < east and south < north")
        for pair in self.assets:
            if "=" not in pair or not all(pair.split("=", 1)):
                raise OptionError(f"--asset {pair!r} must be BAND=ASSET, e.g. B04=red")
        if self.crs is not None:
            from rasterio.crs import CRS
            from rasterio.errors import CRSError

            try:
                CRS.from_user_input(self.crs)
            except CRSError:
                raise OptionError(f"--crs {self.crs!r} is not a CRS; pass e.g. EPSG:32633") from None

    @property
    def given(self) -> bool:
        return self != StacOptions()


@dataclass
class FillOptions:
    """Options of :func:`utilise_cli.fill.fill`; units in the field comments. The CLI takes its defaults
    from here."""

    read: ReadOptions = field(default_factory=ReadOptions)  # how the scenes are decoded
    stac: StacOptions = field(default_factory=StacOptions)  # grid and assets of a STAC input
    bands: Sequence[str] | None = None  # band names to fill; default: the checkpoint's bands, else B2 B3 B4 B8
    method: str = "auto"  # auto (chosen by self-validation), 'utilise' (the network) or a baseline name
    checkpoint: str | Path | None = None  # default: the weights shipped with the package
    chip_size: int = 128  # pixels; a multiple of 2 ** (levels - 1)
    overlap: int = 32  # pixels shared by neighbouring chips, blended
    batch_size: int = 0  # chips per forward pass; 0 = auto (plan.resolve_batch_size: 1 on a CPU, 16 on a GPU)
    network_workers: int = 1  # chips the network predicts at a time on a CPU, the cores shared among them
    panel_width: int = 2048  # columns (pixels) filled at a time, top to bottom: memory grows with it; 0 = all
    device: str = "auto"  # auto | cpu | cuda
    time_window: int = 0  # dates per network pass (0 = the whole series at once)
    precision: str = "auto"  # auto (bf16 where the hardware has it) | fp32 | bf16 | fp16 (autocast)
    regenerate_all: bool = False  # also replace observed pixels by the network's output
    dtype: str = "uint16"  # uint16 DN (scale 1e-4, nodata 0) or float32 (NaN nodata)
    compress: str = "deflate"  # of the COGs: deflate (every reader) or zstd (copied faster; GDAL >= 2.3 reads it)
    overwrite: bool = False
    preview: bool = False  # write a before/after quicklook PNG
    max_memory_mb: float | None = None  # refuse a fill whose estimate exceeds this (None: the available memory)

    def __post_init__(self) -> None:
        checks = [
            (self.method in METHODS, f"--method {self.method!r} is not one of {', '.join(METHODS)}"),
            (self.precision in PRECISIONS, f"--precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"),
            (self.dtype in DTYPES, f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}"),
            (self.compress in COMPRESSIONS,
             f"--compress {self.compress!r} is not one of {', '.join(COMPRESSIONS)}"),
            (self.device in DEVICES or self.device.startswith("cuda:"),
             f"--device {self.device!r} is not one of {', '.join(DEVICES)} (or cuda:N)"),
            (self.chip_size >= 8 and self.chip_size % 8 == 0,
             f"--chip-size {self.chip_size} must be a positive multiple of 8 (e.g. 128 or 256)"),
            (0 <= self.overlap <= self.chip_size // 2,
             f"--overlap {self.overlap} must be between 0 and half the chip size ({self.chip_size // 2})"),
            (self.batch_size >= 0, f"--batch-size {self.batch_size} must be 1 or more chips (0: auto)"),
            (self.network_workers >= 1, f"--network-workers {self.network_workers} must be 1 or more"),
            (self.panel_width == 0 or self.panel_width >= self.chip_size,
             f"--panel-width {self.panel_width} must be 0 (the whole width) or at least the chip size "
             f"({self.chip_size} px)"),
            (self.time_window == 0 or self.time_window >= 2,
             f"--time-window {self.time_window} must be 0 (the whole series) or at least 2 dates"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(message)


def check_scheduler(scheduler: str) -> str:
    """sync, threads, processes, local:N (N >= 1) or a scheduler address (tcp://, tls://, ws://, inproc://)."""
    if scheduler in ("sync", "threads", "processes") or scheduler.startswith(("tcp://", "tls://", "ws://",
                                                                               "inproc://")):
        return scheduler
    if scheduler.startswith("local:") and scheduler[6:].isdigit() and int(scheduler[6:]) >= 1:
        return scheduler
    raise OptionError(f"--scheduler {scheduler!r} must be sync, threads, processes, local:N (N workers) or a "
                      "dask scheduler address such as tcp://host:8786")

