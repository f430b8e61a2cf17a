"""What every entry point shares: a clean exit on bad input, leaving no output folder behind."""

from __future__ import annotations

import functools
import shutil
import sys
from pathlib import Path
from typing import Callable

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from break_a_scene.errors import UserInputError


def _user_error(err: BaseException) -> UserInputError | None:
    """The `UserInputError` behind an exception, also when Hydra's instantiate wrapped it."""
    while err is not None:
        if isinstance(err, UserInputError):
            return err
        err = err.__cause__
    return None


def friendly_errors(task: Callable[[DictConfig], object] | None = None, *, remove_output: bool = True):
    """Turn `UserInputError` into one line on stderr and exit status 2, removing the run's output folder
    (Hydra creates it before the task runs; nothing has been written to it but Hydra's own files). Entry
    points whose folder may hold earlier results (an evaluation trial) keep it: `remove_output=False`."""
    if task is None:
        return functools.partial(friendly_errors, remove_output=remove_output)

    @functools.wraps(task)
    def wrapper(cfg: DictConfig):
        try:
            return task(cfg)
        except Exception as raised:
            err = _user_error(raised)
            if err is None:
                raise
            if remove_output:
                shutil.rmtree(Path(HydraConfig.get().runtime.output_dir), ignore_errors=True)
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
