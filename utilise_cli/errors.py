"""Exception types of the project.

Every error a user can cause derives from :class:`UtiliseError`; the command line turns it into one
line on stderr and a non-zero exit code, without a traceback.
"""

from __future__ import annotations

import textwrap


class UtiliseError(Exception):
    """A problem with the user's input that the user can fix. The message names the file and the fix."""


class CheckpointError(UtiliseError):
    """A file that is not a U-TILISE checkpoint, or one that does not fit the data."""


class InputShapeError(UtiliseError):
    """Input tensors whose shape the network cannot take."""


class SceneError(UtiliseError):
    """A scene folder that cannot be read as a time series (missing dates, masks, bands, grids)."""


class DatasetError(UtiliseError):
    """A dataset source or file that cannot be converted or read."""


class OutputError(UtiliseError):
    """An output location that cannot be written."""


class OptionError(UtiliseError):
    """An option value that cannot work; the message names the option and what it accepts."""


def first_line(err: BaseException, path: object = None, width: int = 100) -> str:
    """An error's message as a clause of a one-line report: its first line, without ``path`` where the message
    repeats it (GDAL quotes the file it could not open), shortened at a word to at most ``width`` characters, no
    full stop."""
    text = (str(err) or type(err).__name__).splitlines()[0]
    if path is not None:
        text = text.replace(f"'{path}' ", "").replace(f"{path}: ", "").replace(str(path), "the file")
    return textwrap.shorten(text, width, placeholder=" ...").rstrip(".")
