"""Test-only: ``from yr.datasystem import TransferEngine`` reaches te.compat.datasystem."""

from te.compat.datasystem import ErrorCode, Result, TransferEngine

__all__ = ["ErrorCode", "Result", "TransferEngine"]
