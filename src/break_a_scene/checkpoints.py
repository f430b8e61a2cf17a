"""Lightning checkpoints that a user points a run at (`ckpt_path=...`): checked before any work is done, and
loaded with `weights_only=True`, so a file that holds more than tensors and plain data runs no code."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from break_a_scene.errors import UserInputError

LIGHTNING_NAMES = ("last", "hpc", "registry")  # Lightning finds these itself


def check_checkpoint(ckpt_path: str | None, written_by: str, required_key: str | None = None) -> None:
    """Refuse a `ckpt_path` that is not a Lightning checkpoint that `written_by` wrote (`required_key`: one that
    only its checkpoints hold). The tensors are memory-mapped, not read."""
    if not ckpt_path or ckpt_path in LIGHTNING_NAMES:
        return
    path = Path(ckpt_path)
    fix = f"Point ckpt_path at a checkpoint that {written_by} wrote (<run>/checkpoints/last.ckpt)."
    if not path.is_file():
        raise UserInputError(f"ckpt_path='{ckpt_path}' is not a file. {fix}")
    if not zipfile.is_zipfile(path):
        raise UserInputError(f"ckpt_path='{ckpt_path}' is not a PyTorch checkpoint (not a zip archive: truncated, "
                             f"or another kind of file). {fix}")
    try:
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except pickle.UnpicklingError:
        raise UserInputError(
            f"ckpt_path='{ckpt_path}' holds Python objects other than tensors and plain data, which could run code "
            f"when loaded, so it is not loaded. {fix}"
        ) from None
    except (RuntimeError, OSError, EOFError) as err:
        raise UserInputError(f"ckpt_path='{ckpt_path}' is damaged ({type(err).__name__}: {err}). {fix}") from None
    keys = ("state_dict", "global_step", *((required_key,) if required_key else ()))
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in keys):
        raise UserInputError(f"ckpt_path='{ckpt_path}' is a PyTorch file but not a checkpoint of {written_by}. {fix}")
