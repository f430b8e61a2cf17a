"""Output folders: found writable before any work is done."""

from __future__ import annotations

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
