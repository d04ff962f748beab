"""Command line of utilise: a thin layer that parses options and calls the Python API.

Every :class:`~utilise_cli.errors.UtiliseError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, TypeVar

import typer

from . import __version__
from .errors import UtiliseError

app = typer.Typer(
    name="utilise",
    help="Cloud-free Sentinel-2 time series with the U-TILISE network (Stucker et al., IEEE TGRS 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., object])
log = logging.getLogger("utilise")


def user_errors(func: F) -> F:
    """Turn the project's errors into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except UtiliseError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished outputs are kept; run the same command again to complete", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(message)s", stream=sys.stderr, force=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"utilise {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Cloud-free Sentinel-2 time series with U-TILISE."""


@app.command()
@user_errors
def info(
    checkpoint: Path = typer.Argument(..., help="A U-TILISE checkpoint: released (.pth) or made by `utilise train`."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show a checkpoint's network configuration, parameter count, bands and metadata."""
    from .network import load_model

    model = load_model(checkpoint)
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
    for key, value in summary["metadata"].items():
        typer.echo(f"{key:12s} {value}")
