"""The command line's version, help and `info` on real checkpoints."""

from __future__ import annotations

import dataclasses
import json

from typer.testing import CliRunner

from utilise_cli import __version__
from utilise_cli.cli import app

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "info" in result.output


def test_info_on_released_checkpoint(reference_dir):
    result = runner.invoke(app, ["info", str(reference_dir / "sen12mscrts_w_s1_seed0.pth"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["parameters"] == 1358285
    assert summary["config"]["input_dim"] == 15 and summary["config"]["output_dim"] == 13
    assert summary["levels"] == 5 and summary["chip_multiple"] == 16


def test_info_on_bad_file_is_one_line_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "bad.pth" in result.output
    assert "Traceback" not in result.output


def test_fill_explain_and_prepare_take_the_same_reading_options():
    import typer

    from utilise_cli.options import ReadOptions

    commands = typer.main.get_command(app).commands
    reading = {f.name for f in dataclasses.fields(ReadOptions)}
    for name in ("fill", "explain", "prepare"):
        params = {p.name: p for p in commands[name].params}
        assert reading <= set(params), (name, reading - set(params))
        assert params["offset"].default == ReadOptions.offset and params["scale"].default == ReadOptions.scale
    assert commands["fill"].params and {p.name for p in commands["fill"].params} >= {"verbose", "quiet", "device"}


def test_importing_the_package_and_the_command_line_does_not_load_torch():
    import subprocess
    import sys

    code = ("import sys, utilise_cli, utilise_cli.cli; "
            "print(sorted(m for m in ('torch', 'rasterio', 'dask') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    from utilise_cli import UTILISE  # and the lazy names still work

    assert UTILISE.__name__ == "UTILISE"


def test_flags_show_no_value_placeholder_in_help():
    for command in ("fill", "prepare", "simulate", "train", "eval", "explain", "info"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        lines = [line for line in result.output.splitlines() if "<bool>" in line and "--help" not in line]
        assert result.exit_code == 0 and not lines, (command, lines)
