"""What every entry point shares: one line and exit status 2 on a user error, removing only what the run
itself created (see `run_folder`)."""

from __future__ import annotations

import functools
import logging
import warnings
from typing import Callable

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from break_a_scene.cli.run_folder import exit_with, remove_what_this_run_created
from break_a_scene.errors import UserInputError


def _user_error(err: BaseException) -> UserInputError | None:
    """The `UserInputError` behind an exception, also when Hydra's instantiate wrapped it."""
    while err is not None:
        if isinstance(err, UserInputError):
            return err
        if isinstance(err, MissingMandatoryValue):
            key = err.full_key or "a setting"
            return UserInputError(f"{key} is not set; give it on the command line ({key}=...).")
        err = err.__cause__
    return None


def quiet_console() -> None:
    """Known third-party notices that tell our users nothing, silenced by their messages where they are
    raised; call it once Lightning is imported. Lightning's own console handler goes too where Hydra's handlers
    already print every record (otherwise each line shows twice)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not record.getMessage().startswith("💡 Tip:"))
    lightning = logging.getLogger("lightning")
    if logging.getLogger().handlers:
        for handler in list(lightning.handlers):
            lightning.removeHandler(handler)


def friendly_errors(task: Callable[[DictConfig], object] | None = None, *, remove_output: bool = True):
    """Turn a user error into one line on stderr and exit status 2. What the run added to its output folder
    is removed (Hydra's own files, nothing else is written before the checks); entry points whose folder
    may hold earlier results that the run reuses (an evaluation trial) keep it: `remove_output=False`."""
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
                remove_what_this_run_created(HydraConfig.get().runtime.output_dir)
            exit_with(str(err))

    return wrapper
