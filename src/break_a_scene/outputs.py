"""Output folders: found writable, with room for what the run will write, before any work is done; and how a
full disk is recognised when it fills up anyway."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

from break_a_scene.errors import UserInputError


def check_writable(path: str | Path, setting: str) -> None:
    """Refuse a folder (existing or still to be made) that this process cannot create or write into."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(
            f"{setting}='{path}' cannot be a folder: '{existing}' is a file. Choose another path for {setting}."
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserInputError(
            f"{setting}='{path}' cannot be written ({err.strerror} in '{existing}'). Choose a folder you can "
            f"write to for {setting}, or change its permissions."
        ) from None


def _existing(path: str | Path) -> Path:
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Free space on the disk that holds `path` (or would hold it)."""
    return shutil.disk_usage(_existing(path)).free


def check_free_space(path: str | Path, needed: int, setting: str, what: str) -> None:
    """Refuse a folder whose disk cannot hold `needed` bytes of `what`."""
    free = free_bytes(path)
    if free < needed:
        raise UserInputError(
            f"{what} needs about {needed / 2**20:.0f} MB but the disk holding {setting}='{path}' has "
            f"{free / 2**20:.0f} MB free; free space there (older runs' checkpoints/ and pipeline/ folders are the "
            f"largest) or point {setting} at another disk."
        )


def is_disk_full(err: BaseException | None) -> bool:
    """Whether an exception, or one behind it, says the disk is full (safetensors and torch put errno 28 in
    their own messages)."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False
