"""Exceptions that carry a message meant for the user.

Every error a user can cause (a missing file, a bad value, an unreadable image) is an
``NstbatchError``: the faces print ``str(error)`` on one line and exit with ``exit_code``,
never a traceback. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class NstbatchError(Exception):
    """Base class: a one-line message and, optionally, what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(NstbatchError):
    """A mistake in what the user asked for: a bad flag value, a layer that does not exist."""

    exit_code = 2


class ParamError(UsageError):
    """A ``StyleParams`` field with a bad name or value."""


class InputError(UsageError):
    """An input or output file that cannot be used: missing, unreadable, not an image."""


class WeightsError(NstbatchError):
    """Network weights that are missing, truncated or not what was expected."""

    exit_code = 2


class OptimizationError(NstbatchError):
    """The optimisation itself failed (a NaN cost, say)."""
