"""The project's error family: what a user can fix, as opposed to a bug in the code.

Every error the package raises on purpose for bad input derives from ``MambaPruneError``; its message names
the cause and the fix. A stage script (``cli.stage_main``) turns exactly these into one line on stderr and
exit status 2; anything else is a bug and keeps its traceback.

The subclasses also derive from the built-in type each one used to be (``ConfigError`` is a ``ValueError``,
the others ``RuntimeError``s), so code that catches those keeps working.
"""

from __future__ import annotations

__all__ = ["MambaPruneError", "ConfigError", "DataError", "CheckpointError", "TrainingError"]


class MambaPruneError(Exception):
    """Bad input the user can fix; the message says what is wrong and what to do."""


class ConfigError(MambaPruneError, ValueError):
    """A parameter is wrong: the message names the key, the value and what is allowed."""


class DataError(MambaPruneError, RuntimeError):
    """Data missing, malformed or unreadable; the message names the file or folder and what to do."""


class CheckpointError(MambaPruneError, RuntimeError):
    """A checkpoint cannot be used: the message names the file, what is wrong and how to fix it."""


class TrainingError(MambaPruneError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says where and what to try."""
