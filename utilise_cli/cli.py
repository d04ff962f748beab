"""Command line of utilise: a thin layer that parses options and calls the Python API.

Every :class:`~utilise_cli.errors.UtiliseError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer

from . import __version__
from .errors import OptionError, UtiliseError
from .options import FillOptions, ReadOptions

app = typer.Typer(
    name="utilise",
    help="Cloud-free Sentinel-2 time series with the U-TILISE network (Stucker et al., IEEE TGRS 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., object])
log = logging.getLogger("utilise")


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a batch system's time limit), raised in the main thread: handled as Ctrl-C is, so that an
    interrupted fill keeps its rows and resumes (Python's default would end the process with nothing kept)."""


def _terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut short the keeping of the rows
    raise Terminated


INTERRUPTED = "nothing is left half-written; run the same command again"


def user_errors(interrupted: str = INTERRUPTED) -> Callable[[F], F]:
    """Turn the project's errors into one line on stderr and exit code 2 (no traceback); Ctrl-C and SIGTERM into
    one line saying what is kept (``interrupted``) and exit code 130 or 143 (128 + the signal's number)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: object, **kwargs: object) -> object:
            # Only the main thread can set a handler; a SIGTERM the caller chose to ignore stays ignored.
            main = threading.current_thread() is threading.main_thread()
            previous = signal.getsignal(signal.SIGTERM) if main else signal.SIG_IGN
            if previous != signal.SIG_IGN:
                signal.signal(signal.SIGTERM, _terminated)
            try:
                return func(*args, **kwargs)
            except UtiliseError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None
            except KeyboardInterrupt as err:
                which = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
                typer.echo(f"{which}: {interrupted}", err=True)
                raise typer.Exit(128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)) from None
            finally:
                if previous != signal.SIG_IGN:  # None: set outside Python, which is the default here
                    signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)

        return wrapper  # type: ignore[return-value]

    return decorate


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners swap it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _option(name: str, annotation: Any, default: Any, *decls: str, **settings: Any) -> inspect.Parameter:
    if annotation is bool:
        settings.setdefault("metavar", "")  # a flag takes no value: show none
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, **settings))


def shared_options(options: list[inspect.Parameter], combine: Callable[..., dict[str, Any]],
                   produces: tuple[str, ...]) -> Callable[[F], F]:
    """Give a command options declared once for several commands: on the command line its parameters
    ``produces`` are replaced by ``options``, and ``combine(**their values)`` builds what the command receives
    under those names (for example one ReadOptions from eleven options)."""
    names = [p.name for p in options]

    def decorate(func: F) -> F:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            return func(*args, **kwargs, **combine(**values))

        own = [p for p in signature.parameters.values() if p.name not in produces]
        wrapper.__signature__ = signature.replace(parameters=own + options)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


_READ = ReadOptions()
_READ_OPTIONS = [
    _option("scale", float, _READ.scale, help="Input reflectance = DN x scale + offset."),
    _option("offset", float, _READ.offset, help="Input offset in reflectance (-0.1 for raw L1C/L2A DN of "
            "processing baseline 04.00 and later; harmonised products need none)."),
    _option("nodata", Optional[float], _READ.nodata, help="Input nodata DN (every scene). Default: each scene's "
            "own (its file's nodata, else 0)."),
    _option("mask_pattern", Optional[str], None, help="Regex that marks mask files by name. Default: names with "
            "mask, cloud, clm, scl, cldprb, ... as a word."),
    _option("band_names", Optional[str], None, help="Comma-separated names of the scenes' bands in file order "
            "(e.g. B1,B2,B3,B4,B5,B6,B7,B8,B8A,B9,B11,B12), for multi-band scenes without band descriptions; "
            "--bands then picks the ones to fill. Default: the files' descriptions."),
    _option("mask_folder", Optional[str], _READ.mask_folder, help="Folder that holds the cloud masks, one file per "
            "date with the date in its name (any other name). Default: the scenes' folder, and a subfolder of it "
            "named as masks (masks/, clouds/, cloud_masks/, SCL/, ...) whose every file is read as a mask."),
    _option("mask_kind", str, _READ.mask_kind, help="auto, binary (1 = occluded), scl (classes), probability "
            "(0..100), fmask (HLS bits: cirrus, cloud, adjacent, shadow occluded; 255 fill), or none (no masks: the "
            "cloud screen makes them; auto does this, with a warning, when no date has a mask). auto reads a mask "
            "file's kind from its name (scl, prob, fmask; else binary)."),
    _option("mask_band", Optional[str], _READ.mask_band, help="Mask band inside the scenes (default: the first of "
            "SCL, MSK_CLDPRB, CLOUD_PROBABILITY, ..., QA60 found)."),
    _option("cloud_threshold", float, _READ.cloud_threshold, help="Probability masks: occluded at or above this "
            "value (percent; masks stored as fractions 0..1 or bytes 0..255 are read on their scale, found from "
            "their values)."),
    _option("scl_classes", str, ",".join(map(str, _READ.scl_classes)), help="SCL classes counted as occluded "
            "(0, 1 are always no data)."),
    _option("mask_buffer", int, _READ.mask_buffer, min=0, help="Grow every cloud mask by this many pixels (a "
            "square around each occluded pixel), to hide the thin bright rims that masks miss. The cloud screen "
            "adds its pixels after this, ungrown."),
    _option("date_pattern", Optional[str], _READ.date_pattern, help="Regex with named groups year, month, day "
            "(or doy) for dates in file names. Default: YYYYMMDD, YYYY-MM-DD (or _ or .), june_28_2021..."),
    _option("align", bool, _READ.align, "--align", help="Reproject scenes on other grids onto the first "
            "scene's grid (bilinear for reflectance, nearest for masks)."),
    _option("screen", bool, _READ.screen, "--screen/--no-screen", help="Also mask the clouds, haze, rims and "
            "shadows that the masks miss: pixels much brighter in blue and red (clouds) or darker in NIR "
            "(shadows) than their own clear dates (thresholds in the README); flagged 2 in the flags sidecar. "
            "Needs B2, B4, B8 (skipped with a warning otherwise); always on when there are no masks."),
]


def _read_options(mask_pattern: str | None, scl_classes: str, band_names: str | None, **values: Any
                  ) -> dict[str, Any]:
    try:
        classes = tuple(int(c) for c in scl_classes.split(","))
    except ValueError:
        raise typer.BadParameter("must be comma-separated integers such as 3,8,9,10", param_hint="--scl-classes")
    names = tuple(b.strip() for b in band_names.split(",")) if band_names else ()
    return {"read": ReadOptions(mask_pattern=mask_pattern or _READ.mask_pattern, scl_classes=classes,
                                band_names=names, **values)}


read_options = shared_options(_READ_OPTIONS, _read_options, ("read",))


def _log_options(verbose: int, quiet: bool) -> dict[str, Any]:
    setup_logging(verbose, quiet)
    return {"quiet": quiet}


log_options = shared_options([
    _option("verbose", int, 0, "--verbose", "-v", count=True, help="More log lines (-vv for debug)."),
    _option("quiet", bool, False, "--quiet", "-q", help="Only warnings and errors."),
], _log_options, ("quiet",))


def _device_option(device: str) -> dict[str, Any]:
    return {"device": device}


device_option = shared_options([_option("device", str, FillOptions.device, help="auto (CUDA when present), "
                                        "cpu or cuda.")], _device_option, ("device",))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"utilise {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Optional[bool] = typer.Option(
        None, "--version", metavar="", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Cloud-free Sentinel-2 time series with U-TILISE."""


@app.command()
@user_errors()
def info(
    checkpoint: str = typer.Argument(..., help="A U-TILISE checkpoint: released (.pth), made by `utilise train`, "
                                     "or 'shipped' (the packaged weights)."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print machine-readable JSON."),
) -> None:
    """Show a checkpoint's network configuration, parameter count, bands and metadata."""
    from .network import load_model
    from .weights import resolve_checkpoint

    model = load_model(resolve_checkpoint(checkpoint))
    summary = {
        "checkpoint": str(checkpoint),
        "sha256": model.metadata.get("checkpoint_sha256"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": model.config.to_dict(),
        "levels": model.config.levels,
        "chip_multiple": model.config.size_multiple,
        "metadata": {k: v for k, v in model.metadata.items() if k not in ("checkpoint_sha256", "checkpoint_path")},
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=1, default=str))
        return
    cfg = model.config
    typer.echo(f"checkpoint   {checkpoint}")
    typer.echo(f"sha256       {summary['sha256']}")
    typer.echo(f"parameters   {summary['parameters']:,}")
    typer.echo(f"channels     {cfg.input_dim} in -> {cfg.output_dim} out")
    typer.echo(f"widths       encoder {list(cfg.encoder_widths)}, decoder {list(cfg.decoder_widths)}")
    typer.echo(f"levels       {cfg.levels} (chip height/width must be multiples of {cfg.size_multiple})")
    typer.echo(f"attention    {cfg.n_head} heads, d_k {cfg.d_k}")
    if cfg.residual:
        typer.echo(f"residual     output = {cfg.residual} interpolation + the network's correction (input: "
                   f"{cfg.output_dim} interpolated bands + a gap channel)")
    for key, value in summary["metadata"].items():
        typer.echo(f"{key:12s} {value}")


_FILL = FillOptions()


@app.command()
@user_errors("finished outputs and the rows written so far are kept; run the same command again to resume")
@read_options
@log_options
@device_option
def fill(
    folder: Path = typer.Argument(..., help="Folder of dated Sentinel-2 GeoTIFF scenes plus cloud masks, a folder of "
                                  "such folders (tiles), or a STAC ItemCollection / Catalog JSON file (a saved "
                                  "pystac-client search)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: one COG per date, YYYYMMDD_filled.tif, "
                             "plus YYYYMMDD_filled_flags.tif (0 observed, 1 filled under the mask, 2 filled where the "
                             "cloud screen found cloud, 255 never observed)."),
    checkpoint: Optional[Path] = typer.Option(None, help="U-TILISE checkpoint. Default: the shipped weights."),
    method: str = typer.Option(_FILL.method, help="auto: whichever of linear, adjusted and the network fills this "
                               "scene best, judged by hiding observed pixels under the scene's own cloud masks "
                               "(self-validation on up to 8 chips; the scores go to fill_report.json and the COG "
                               "tags). Or one of: utilise (the network), linear, adjusted (linear plus the date's "
                               "own anomaly: a gain, a lean towards one neighbour and an offset, fitted on the "
                               "date's observed pixels), closest, last, next."),
    bands: Optional[str] = typer.Option(None, help="Comma-separated band names to fill, in the network's order. "
                                        "Default: the checkpoint's bands, else B2,B3,B4,B8."),
    chip_size: int = typer.Option(_FILL.chip_size, help="Chip height and width in pixels (128 or 256; a multiple "
                                  "of 8)."),
    overlap: int = typer.Option(_FILL.overlap, help="Pixels shared by neighbouring chips, blended with a cosine "
                                "ramp."),
    batch_size: int = typer.Option(_FILL.batch_size, help="Chips per forward pass; 0: 1 on a CPU (as fast as more, "
                                   "and less memory), 16 on a GPU."),
    network_workers: int = typer.Option(_FILL.network_workers, help="Chips the network predicts at a time on a "
                                        "CPU, the cores shared among them, while the rows before are blended and "
                                        "written. 2 on a 2-core CPU: fills about 13 % faster for about 200 MB "
                                        "more memory (shipped network in bf16). Outputs do not depend on it."),
    panel_width: int = typer.Option(_FILL.panel_width, help="Columns (pixels) filled at a time, top to bottom; "
                                    "memory grows with it, not with the raster's width. 0: the whole width. "
                                    "Outputs do not depend on it."),
    time_window: int = typer.Option(_FILL.time_window, help="Dates per network pass; longer series run in "
                                    "overlapping, blended windows. 0 = the whole series at once (or the "
                                    "checkpoint's max_dates)."),
    precision: str = typer.Option(_FILL.precision, help="auto: bf16 autocast where the hardware multiplies bf16 "
                                  "natively (CUDA GPUs, CPUs with AMX or AVX-512 BF16), else fp32. Or fp32, bf16, "
                                  "fp16 (autocast; the README gives the accuracy cost)."),
    regenerate_all: bool = typer.Option(_FILL.regenerate_all, "--regenerate-all", metavar="", help="Replace observed pixels by "
                                        "the network's output too, decoding every date and chip (default: keep them "
                                        "as they are, and decode only the dates a chip has something to fill on)."),
    dtype: str = typer.Option(_FILL.dtype, help="uint16 (DN = reflectance x 10000, nodata 0) or float32 (NaN "
                              "nodata)."),
    compress: str = typer.Option(_FILL.compress, help="Compression of the COGs: deflate (every reader opens it) or "
                                 "zstd (the copies to COG take about half the time, files about as large; readers "
                                 "need ZSTD: GDAL 2.3 or later, QGIS, rasterio; some web viewers cannot)."),
    overwrite: bool = typer.Option(_FILL.overwrite, "--overwrite", metavar="", help="Redo dates whose outputs exist (default: "
                                   "skip them)."),
    preview: bool = typer.Option(_FILL.preview, "--preview", metavar="", help="Also write preview.png: input and filled "
                                 "series."),
    max_memory: Optional[float] = typer.Option(_FILL.max_memory_mb, help="MB: refuse a fill whose memory "
                                               "estimate is larger (default: the memory available now)."),
    scheduler: str = typer.Option("sync", help="sync (this process), processes or local:N (a dask LocalCluster of "
                                  "N worker processes), or a dask scheduler address such as tcp://host:8786. A "
                                  "folder of tile folders runs one tile per task (each into OUT/<tile>); one "
                                  "folder of scenes runs its chip rows on the workers. Outputs are the same."),
    dry_run: bool = typer.Option(False, "--dry-run", metavar="", help="Print scenes (or STAC items and assets), "
                                 "dates, grid, chips, time and memory; read no pixels, write nothing."),
    crs: Optional[str] = typer.Option(_FILL.stac.crs, help="STAC input: output CRS, e.g. EPSG:32633 (needed when "
                                      "the items are in several). Default: the first item's."),
    resolution: Optional[float] = typer.Option(_FILL.stac.resolution, help="STAC input: pixel size in units of "
                                               "the CRS (metres for UTM). Default: the first item's first band's "
                                               "(10 m for B2, B3, B4, B8)."),
    bbox: Optional[str] = typer.Option(None, help="STAC input: area to fill, 'west,south,east,north' in degrees "
                                       "(lon/lat). Default: all of the first item's grid (or, with --crs, the "
                                       "items' footprints)."),
    asset: Optional[list[str]] = typer.Option(None, help="STAC input: BAND=ASSET for asset names that are not "
                                              "recognised (blue/green/red/nir and B02... are), repeatable: "
                                              "--asset B04=red_10m."),
    read: ReadOptions = _READ,
    quiet: bool = False,
    device: str = _FILL.device,
) -> None:
    """Fill clouds in a folder of dated scenes or a STAC search result; write one cloud-free Cloud-Optimized
    GeoTIFF per date and a STAC catalog of them (OUT/catalog.json)."""
    from .options import StacOptions, check_scheduler
    from .plan import available_memory_mb, plan_fill, planning_predictor

    check_scheduler(scheduler)
    options = FillOptions(
        read=read, bands=[b.strip() for b in bands.split(",")] if bands else None, method=method,
        checkpoint=checkpoint, chip_size=chip_size, overlap=overlap, batch_size=batch_size,
        network_workers=network_workers, device=device,
        panel_width=panel_width,
        time_window=time_window, regenerate_all=regenerate_all, dtype=dtype, compress=compress, precision=precision,
        overwrite=overwrite, preview=preview, max_memory_mb=max_memory,
        stac=StacOptions(crs=crs, resolution=resolution, assets=tuple(asset or ()),
                         bbox=_bbox(bbox) if bbox else None))
    from .tiles import check_tile_options, find_tiles, fill_tiles

    tiles = find_tiles(folder)
    if tiles is not None:
        if dry_run:
            check_tile_options(options)  # fill_tiles checks for the run itself
            typer.echo(f"{len(tiles)} tiles in {folder}; each is filled into {out}/<tile> (scheduler {scheduler}):")
            predictor = planning_predictor(options)
            for tile in tiles:
                plan = plan_fill(tile, out / tile.name, options, predictor)
                typer.echo(f"  {tile.name}: {len(plan.scenes)} dates, {len(plan.todo)} to write, {plan.chips} chips")
            return
        results = fill_tiles(folder, out, options, scheduler)
        failed = [r for r in results if r.error]
        written = sum(r.outputs for r in results)
        typer.echo(f"{len(results) - len(failed)} of {len(results)} tiles done, {written} COGs written to {out}")
        if failed:
            for r in failed:
                typer.echo(f"error: tile {r.tile}: {r.error}", err=True)
            raise typer.Exit(2)
        return
    if dry_run:
        from .plan import describe_plan

        plan = plan_fill(folder, out, options, planning_predictor(options))
        typer.echo("\n".join(describe_plan(plan, options, available_memory_mb())))
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .fill import fill as run_fill

    with Progress(TextColumn("filling"), BarColumn(), MofNCompleteColumn(), TextColumn("chips"),
                  TimeRemainingColumn(), disable=quiet, transient=False) as bar:
        # Hidden until the fill has a plan: a scene refused while opening then gets its one-line error alone.
        task = bar.add_task("fill", total=None, visible=False)
        report = run_fill(folder, out, options, progress=lambda done, total: bar.update(task, completed=done,
                                                                                         total=total, visible=True),
                          scheduler=scheduler)
    if report.skipped_outputs and not report.outputs:
        typer.echo(f"all {len(report.skipped_outputs)} outputs already in {out}; nothing to do (--overwrite to redo)")
        return
    typer.echo(f"wrote {_count(len(report.outputs), 'COG')} to {out} ({len(report.skipped_outputs)} already there) "
               f"with {report.method}: {_count(report.chips_run, 'chip')} run, "
               f"{_count(report.chips_skipped, 'chip')} with nothing to fill passed through, "
               f"{report.filled_pixels} pixel-dates filled ({report.screened_pixels} found by the cloud screen), "
               f"{report.never_observed_pixels} pixels never observed (nodata), {report.seconds:.1f} s")
    if report.preview:
        typer.echo(f"preview: {report.preview}")


def _count(n: int, noun: str) -> str:
    """'1 COG', '2 COGs'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _bbox(text: str) -> tuple[float, float, float, float]:
    values = _float_list(text, "--bbox")
    if len(values) != 4:
        raise OptionError(f"--bbox {text!r} must be four numbers: west,south,east,north in degrees")
    return values[0], values[1], values[2], values[3]


def _float_list(text: str, option: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter("must be comma-separated numbers such as 0.3,0.5", param_hint=option) from None


@app.command()
@user_errors()
@read_options
@log_options
def prepare(
    fmt: str = typer.Argument(..., metavar="FORMAT", help="Source format: geotiff (a folder of dated scenes), "
                              "minicube (earthnet-minicuber .nc), worldcereal (a location folder), openeo (.nc), "
                              "earthnet2021 (.npz cubes), sen12mscrts (an ROI folder)."),
    sources: list[Path] = typer.Argument(..., help="One or more files or folders of that format."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset file to write (HDF5, e.g. train.h5); "
                             "the screening report goes to OUT.report.json."),
    bands: Optional[str] = typer.Option(None, help="Comma-separated bands in the source's naming. Default per "
                                        "format: B2,B3,B4,B8 (GeoTIFF), B02,B03,B04,B8A (minicube, EarthNet2021)."),
    max_cover: float = typer.Option(0.01, help="A frame is clear when at most this fraction (0..1) of its valid "
                                    "pixels is cloud or shadow."),
    max_nodata: float = typer.Option(0.5, help="Frames with a larger no-data fraction (0..1) are dropped."),
    min_frames: int = typer.Option(5, help="Series with fewer clear frames are dropped."),
    mask: str = typer.Option("scl", help="Minicubes only: scl (classes 3, 8, 9, 10) or dlmask."),
    dry_run: bool = typer.Option(False, "--dry-run", metavar="", help="Read and screen, print the report, write nothing."),
    read: ReadOptions = _READ,
    quiet: bool = False,
) -> None:
    """Convert a dataset source to the training format: clear frames only, with a screening report.
    GeoTIFF folders are decoded as `utilise fill` decodes them, with the same reading options."""
    from .datasets import ScreeningRule, prepare as run_prepare
    from .datasets.prepare import report_lines

    options: dict[str, Any] = {"bands": [b.strip() for b in bands.split(",")]} if bands else {}
    if fmt == "minicube":
        options["mask"] = mask
    if fmt == "geotiff":
        options["read"] = read
    report = run_prepare(fmt, sources, out, ScreeningRule(max_cover, max_nodata, min_frames), dry_run, **options)
    if not quiet:
        typer.echo("\n".join(report_lines(report)))
    typer.echo("dry run: nothing written" if dry_run else f"wrote {out}")


@app.command()
@user_errors()
@log_options
def simulate(
    dataset: Path = typer.Argument(..., help="Dataset file made by `utilise prepare`."),
    out: Path = typer.Option(..., "--out", "-o", help="Simulated dataset file to write (HDF5)."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same file."),
    ratio: str = typer.Option("0.5", help="Comma-separated ratios of masked frames (0..1]; each is stored."),
    masks: list[Path] = typer.Option([], "--masks", help="Real cloud-mask library used when a series has no "
                                     "cloudy dates of its own: an eo-learn folder (CLM.npy), a WorldCereal 20 m "
                                     ".nc, a .npy or a dataset .h5. Repeatable."),
    quiet: bool = False,
) -> None:
    """Add synthetic gaps made of real cloud masks (never on frame 0), repeatable by seed."""
    from .datasets import simulate as run_simulate

    stats = run_simulate(dataset, out, seed, _float_list(ratio, "--ratio"), masks)
    for st in stats:
        typer.echo(st.line())
    typer.echo(f"wrote {out}")


@app.command()
@user_errors("the epochs finished are kept in the run folder (last.pth, best.pth); add --resume to the same "
             "command to continue from the last")
@log_options
def train(
    config: Path = typer.Argument(..., help="Training configuration (YAML); see configs/shipped.yaml."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: config.yaml, log.csv, best.pth, last.pth, "
                             "val_*.png."),
    resume: bool = typer.Option(False, "--resume", metavar="", help="Continue the run in --out from its last epoch."),
    epochs: Optional[int] = typer.Option(None, help="Override: number of epochs."),
    lr: Optional[float] = typer.Option(None, help="Override: Adam learning rate (paper 2e-4)."),
    batch_size: Optional[int] = typer.Option(None, help="Override: series per batch (paper 3)."),
    device: Optional[str] = typer.Option(None, help="Override: auto, cpu or cuda."),
    max_minutes: Optional[float] = typer.Option(None, help="Override: stop after the epoch that passes this "
                                                "wall time (minutes)."),
    set_: list[str] = typer.Option([], "--set", help="Override any setting: key=value (YAML value). Repeatable."),
    quiet: bool = False,
) -> None:
    """Train U-TILISE on prepared datasets (gaps simulated anew per sample) and keep the best checkpoint."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .train import TrainConfig, parse_override, train as run_train

    overrides = dict(parse_override(s) for s in set_)
    for key, value in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size), ("device", device),
                       ("max_minutes", max_minutes)):
        if value is not None:
            overrides[key] = value
    cfg = TrainConfig.from_yaml(config, overrides)
    with Progress(TextColumn("training epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("steps, loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), disable=quiet) as bar:
        task = bar.add_task("train", total=cfg.epochs * cfg.steps_per_epoch, epoch=0, loss=0.0)
        results = run_train(cfg, out, resume, progress=lambda e, s, loss: bar.update(task, completed=s, epoch=e + 1,
                                                                                     loss=loss))
    if results:
        last = results[-1]
        typer.echo(f"{len(results)} epochs, {last.step} steps, {last.seconds / 60:.1f} min; last validation "
                   f"loss {last.val_loss:.4f}, PSNR on gaps {last.val_psnr_occluded:.2f} dB; best.pth in {out}")


@app.command("eval")
@user_errors()
@log_options
@device_option
def evaluate_command(
    methods: str = typer.Argument(..., metavar="MODEL_OR_BASELINE", help="Comma-separated: auto (fill's default: "
                                  "self-validation chooses), linear, adjusted, closest, "
                                  "last, next, shipped (the packaged weights) or checkpoint paths; add @bf16 or @fp16 "
                                  "to a network to score it under autocast."),
    simulated: Path = typer.Argument(..., help="Simulated dataset made by `utilise simulate` (or, with --seeds, a "
                                     "dataset made by `utilise prepare`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Results folder: metrics.json, metrics.md, metrics.png."),
    ratio: Optional[str] = typer.Option(None, help="Stored gaps to score, e.g. ratio_0.50. Default: the first."),
    seeds: Optional[str] = typer.Option(None, help="Comma-separated seeds: simulate the prepared dataset once per "
                                        "seed (ratio 0.5) and report mean ± std over seeds in summary.md/json."),
    masks: list[Path] = typer.Option([], "--masks", help="With --seeds: mask libraries for series without cloudy "
                                     "dates of their own (see `utilise simulate`)."),
    quiet: bool = False,
    device: str = _FILL.device,
) -> None:
    """Score checkpoints and interpolation baselines on the same simulated gaps (MAE, RMSE, PSNR dB, SSIM,
    SAM degrees; all / occluded / observed input pixels, averaged per series)."""
    from .evaluate import evaluate, load_method, markdown_table, write_results

    loaded = [load_method(m.strip(), device) for m in methods.split(",") if m.strip()]
    if seeds:
        from .evaluate import seed_study, seed_table

        summary = seed_study(loaded, simulated, [int(v) for v in _float_list(seeds, "--seeds")], out, masks)
        table = seed_table(summary)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        (out / "summary.md").write_text(f"`{simulated}`, seeds {seeds}, ratio 0.5\n\n{table}\n")
        if not quiet:
            typer.echo(table)
        typer.echo(f"wrote {out / 'summary.md'}, {out / 'summary.json'} and one folder per seed")
        return
    results = evaluate(loaded, simulated, ratio)
    paths = write_results(results, out)
    if not quiet:
        typer.echo(markdown_table(results))
    typer.echo(f"wrote {', '.join(str(p) for p in paths)}")


@app.command()
@user_errors()
@read_options
@log_options
@device_option
def explain(
    source: Path = typer.Argument(..., help="A folder of dated scenes (as for fill) or a dataset .h5 file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for series.png, attention_<date>.png, attention_head<k>.png."),
    checkpoint: Optional[Path] = typer.Option(None, help="U-TILISE checkpoint. Default: the shipped weights."),
    date: Optional[str] = typer.Option(None, help="Target date (YYYY-MM-DD) whose attention is shown. Default: the "
                                       "date with most occluded pixels in the chip."),
    pixel: Optional[str] = typer.Option(None, help="X,Y in pixels (column, row from the top left): explain the chip "
                                        "centred there, marked with a red +."),
    chip: Optional[int] = typer.Option(None, help="Chip number (row-major, chips of --chip-size without overlap). "
                                       "Default: the chip with most occluded pixels."),
    chip_size: int = typer.Option(128, help="Chip side in pixels."),
    head: int = typer.Option(0, help="Head whose attention is shown for every target date."),
    sequence: Optional[str] = typer.Option(None, help="Dataset files: the series name (default: the first)."),
    read: ReadOptions = _READ,
    quiet: bool = False,
    device: str = _FILL.device,
) -> None:
    """Show which dates the network drew from: input, filled series and bottleneck attention per head."""
    from .explain import attention_to_occluded, explain_dataset, explain_scenes, write_figures
    from .network import load_model
    from .weights import resolve_checkpoint

    if pixel is not None and chip is not None:
        raise typer.BadParameter("give --pixel or --chip, not both", param_hint="--pixel")
    xy = None
    if pixel is not None:
        try:
            x_text, y_text = pixel.split(",")
            xy = (int(x_text), int(y_text))
        except ValueError:
            raise typer.BadParameter("must be X,Y in whole pixels, e.g. 60,80", param_hint="--pixel") from None
    model = load_model(resolve_checkpoint(checkpoint), device)
    if source.suffix in (".h5", ".hdf5"):
        expl = explain_dataset(model, source, sequence)
    else:
        expl = explain_scenes(model, source, chip_size, chip, xy, read=read)
    paths = write_figures(expl, out, date, head)
    stats = attention_to_occluded(expl)
    typer.echo(f"chip at row {expl.origin[0]}, column {expl.origin[1]}: {len(expl.dates)} dates, "
               f"{stats['occluded_places']} occluded pixel-dates")
    typer.echo(f"at occluded places a key date gets {stats['clear_key_mean']:.3f} attention when clear and "
               f"{stats['occluded_key_mean']:.3f} when occluded (uniform would be {stats['uniform']:.3f})")
    typer.echo("wrote " + ", ".join(str(p) for p in paths))
