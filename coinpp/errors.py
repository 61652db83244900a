"""One error hierarchy: everything a user can get wrong ends up as a CoinError.

The CLI catches CoinError and prints its message on one line with a non-zero exit;
any other exception is a bug in coin.
"""

from __future__ import annotations


class CoinError(Exception):
    """Base class of every error a user can cause (bad input, bad file, bad option)."""

    exit_code = 1


class InputError(CoinError):
    """An input file is missing, unreadable or of a kind we do not handle."""


class FormatError(CoinError):
    """A .coin file is not valid: foreign, truncated, corrupted or of an unknown version."""


class CodecError(CoinError):
    """A codec is unknown, incomplete, tampered with, or does not match a file."""


class OutputError(CoinError):
    """An output cannot be written (exists without --force, unwritable folder, full disk)."""


class LimitError(FormatError):
    """A declared size exceeds the safety caps (decompression-bomb guard)."""


class DiskFullError(OutputError):
    """The output device is full: a batch stops here, keeping what it finished."""
