"""What the command groups share: consoles, common options, option parsing and the folder runner."""

from __future__ import annotations

import math
from pathlib import Path

import click
from rich.console import Console

from ..errors import CoinError, InputError

console = Console(highlight=False, soft_wrap=True)  # a line piped or logged stays one line
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                      help="Where to run the network (auto: CUDA when present).")
FORCE = click.option("--force", is_flag=True, help="Overwrite an existing output.")
HUGE = click.option("--allow-huge", is_flag=True, help="Lift the size caps for a trusted, very large file.")


def read_coin(path: str) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    data = p.read_bytes()
    if not data:
        raise InputError(f"{p}: the file is empty")
    return data


def about(name: str, error: CoinError) -> CoinError:
    """The same error, naming the file it concerns (once)."""
    text = str(error)
    return error if text.startswith(f"{name}:") else type(error)(f"{name}: {text}")


def parse_size(text: str | None) -> tuple[int, ...] | None:
    """'WxH' (or 'XxYxZ' for volumes) -> the numbers as typed; the modality orders them."""
    if text is None:
        return None
    try:
        parts = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1536x1024") from None
    if len(parts) < 2 or min(parts) < 1:
        raise InputError(f"--size {text!r}: expected positive WIDTHxHEIGHT")
    return parts


def parse_axis(text: str | None, option: str) -> tuple[float, float, int] | None:
    """'FIRST:LAST:N' -> (first, last, n)."""
    if text is None:
        return None
    try:
        a, b, n = text.split(":")
        first, last, count = float(a), float(b), int(n)
    except ValueError:
        raise InputError(f"{option} {text!r}: expected FIRST:LAST:N, e.g. 50:58:161") from None
    if count < 1 or not (math.isfinite(first) and math.isfinite(last)):
        raise InputError(f"{option} {text!r}: N must be positive and the ends finite")
    return first, last, count


BATCH_OPTIONS = [
    click.option("--shard", help="Only this share of a folder: I/N with 0 <= I < N (for job arrays)."),
    click.option("--jobs", default=1, show_default=True, help="Threads reading files ahead (folders)."),
    click.option("--json", "as_json", is_flag=True, help="Print the folder report as JSON (stdout)."),
]


def batch_options(f):
    for option in reversed(BATCH_OPTIONS):
        f = option(f)
    return f


def parse_list(text: str, option: str, kind: type, low: float, high: float) -> list:
    """'4,5' -> [4, 5], each value checked to lie in [low, high]."""
    try:
        values = [kind(v) for v in text.split(",") if v]
    except ValueError:
        raise InputError(f"{option} {text!r}: expected comma-separated numbers, e.g. 4,5") from None
    if not values or any(not low <= v <= high for v in values):
        raise InputError(f"{option}: each value must be in {low:g}..{high:g}")
    return values
