"""Exception types of the project.

Every error a user can cause derives from :class:`UtiliseError`; the command line turns it into one
line on stderr and a non-zero exit code, without a traceback.
"""

from __future__ import annotations


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
