"""Atomic output: write to a temporary file in the target folder, then rename.

A crash, Ctrl-C or full disk never leaves a partial output, and nothing is overwritten
without force.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import DiskFullError, OutputError


def check_writable(path: Path, force: bool) -> None:
    path = Path(path)
    if path.exists() and not force:
        raise OutputError(f"{path} exists (use --force to overwrite)")
    if not path.parent.exists():
        raise OutputError(f"{path.parent}: no such folder")


def atomic_write(path: Path, write: Callable[[Path], None], force: bool = False) -> None:
    """Call write(tmp_path) and rename the result onto `path`."""
    path = Path(path)
    check_writable(path, force)
    # The temporary name ends with the target's extensions, so writers that pick their format by
    # extension (Pillow, and later soundfile, nibabel) write the right one.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; outputs honour the umask as cp does
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(f"{path}: cannot write ({e.strerror or e})") from None
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, force: bool = False) -> None:
    atomic_write(path, lambda p: p.write_bytes(data), force)


def replace_with(path: Path, write: Callable[[Path], None]) -> None:
    """atomic_write that replaces an existing file: for files a command owns and rewrites (codec folders,
    checkpoints). safetensors' writers make 0600 files; through here they honour the umask too."""
    atomic_write(path, write, force=True)
