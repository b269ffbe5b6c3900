"""te's error codes as exceptions.

Every failure of a te call raises a subclass of :class:`te.Error` carrying
the te error ``code`` (the numbers te documents: Invalid=2, NotFound=3,
RuntimeError=5, NotReady=8, NotAuthorized=9, NotSupported=36, Timeout=100,
Canceled=101, Disconnected=102) and a ``message`` naming what was wrong.
Each subclass also derives from the built-in exception closest to it, so
``except ValueError`` catches a bad argument.
"""

from __future__ import annotations

import builtins

__all__ = [
    "Error",
    "InvalidError",
    "NotFoundError",
    "RuntimeError",
    "NotReadyError",
    "NotAuthorizedError",
    "NotSupportedError",
    "TimeoutError",
    "CanceledError",
    "DisconnectedError",
    "CODES",
    "from_code",
]

#: te error code numbers by name.
CODES: dict[str, int] = {
    "Ok": 0,
    "Invalid": 2,
    "NotFound": 3,
    "RuntimeError": 5,
    "NotReady": 8,
    "NotAuthorized": 9,
    "NotSupported": 36,
    "Timeout": 100,
    "Canceled": 101,
    "Disconnected": 102,
}

_NAMES = {v: k for k, v in CODES.items()}


class Error(Exception):
    """A te failure: ``code`` (int, te's error code) and ``message`` (str)."""

    code: int = 5
    message: str

    def __init__(self, message: str = "", code: int | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(message)

    @property
    def code_name(self) -> str:
        """The code's name as te documents it (``"NotAuthorized"``)."""
        return _NAMES.get(self.code, str(self.code))

    def __str__(self) -> str:
        return f"{self.code_name}: {self.message}"

    def __repr__(self) -> str:
        return f"te.{type(self).__name__}(code={self.code}, message={self.message!r})"


class InvalidError(Error, ValueError):
    """A bad argument (code 2): zero address or length, overlap, unknown device name, empty or mismatched lists."""

    code = 2


class NotFoundError(Error, LookupError):
    """The named thing does not exist (code 3): no region at that base, unregistered local memory."""

    code = 3


class RuntimeError(Error, builtins.RuntimeError):  # noqa: A001 - te's code name
    """An error of the environment (code 5): peer unreachable, driver failure."""

    code = 5


class NotReadyError(Error):
    """Not initialized, finalized, or busy with work that must end first (code 8)."""

    code = 8


class NotAuthorizedError(Error, PermissionError):
    """The peer refused access (code 9): range not inside one region registered with the needed permission, or a refused secret."""

    code = 9


class NotSupportedError(Error):
    """Not supported here (code 36): for example a device without its driver."""

    code = 36


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - te's code name
    """A deadline passed (code 100)."""

    code = 100


class CanceledError(Error):
    """Canceled by the user (code 101)."""

    code = 101


class DisconnectedError(Error, ConnectionError):
    """The connection to the peer was lost before the operation ended (code 102)."""

    code = 102


_BY_CODE: dict[int, type[Error]] = {
    c.code: c
    for c in (
        InvalidError,
        NotFoundError,
        RuntimeError,
        NotReadyError,
        NotAuthorizedError,
        NotSupportedError,
        TimeoutError,
        CanceledError,
        DisconnectedError,
    )
}


def from_code(code: int, message: str) -> Error:
    """The exception for te error ``code`` with ``message`` (not raised)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return Error(message, code)
    return cls(message)
