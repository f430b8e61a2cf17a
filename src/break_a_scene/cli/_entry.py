"""What every entry point shares: one line and exit status 2 on a user error (a bad setting, a bad file, a bad
override or config choice), with the run folder given back as it was (see `run_folder`)."""

from __future__ import annotations

import functools
import logging
import os
import warnings
from typing import Callable

from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from break_a_scene.cli.run_folder import exit_with, undo_run
from break_a_scene.errors import DiskFullError, UserInputError
from break_a_scene.outputs import is_disk_full
from break_a_scene.settings import RENAMED


def _user_error(err: BaseException) -> UserInputError | None:
    """The `UserInputError` behind an exception, also when Hydra's instantiate wrapped it; a full disk is one."""
    raised = err
    while err is not None:
        if isinstance(err, UserInputError):
            return err
        if isinstance(err, MissingMandatoryValue):
            key = err.full_key or "a setting"
            return UserInputError(f"{key} is not set; give it on the command line ({key}=...).")
        err = err.__cause__
    if is_disk_full(raised):
        return UserInputError(f"the disk filled up ({raised}); free space on it, or write elsewhere "
                              f"(hydra.run.dir=...), and run the command again.")
    return None


def _config_error_line(err: Exception) -> str:
    """Hydra's several-line report of a bad override or config choice, as one line with the fix."""
    if isinstance(err, OverrideParseException):
        return (f"cannot read the override {err.override!r}: a value holding spaces or any of <>()[]{{}},=' needs "
                f"quotes for Hydra inside the shell's, e.g. \"prompt='a photo of <asset0> on a table'\" "
                f"({' '.join(err.message.split())}).")
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    renamed = [(old, new) for old, new in RENAMED.items() if f"'{old}'" in str(err)]
    if renamed:
        old, new = renamed[0]
        return f"{old} is now {new}; give {new}=... instead."
    options = getattr(err, "options", None)
    if options:  # an unknown config choice: its group's options
        return f"{lines[0]}; choose one of {', '.join(options)}."
    cause = f" ({' '.join(str(err.__cause__).split())})" if err.__cause__ is not None else ""
    return " ".join(lines) + cause


def hydra_entry(main: Callable[[], object]) -> Callable[[], object]:
    """Around a `hydra.main` function: a bad override or an unknown config choice ends in one line and exit
    status 2, like every other user error (Hydra itself prints several lines and exits with 1). Hydra is told
    to raise (HYDRA_FULL_ERROR) so that the error can be read here."""

    @functools.wraps(main)
    def wrapper():
        previous = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return main()
        except (OverrideParseException, ConfigCompositionException, SearchPathException) as err:
            exit_with(_config_error_line(err))
        finally:
            if previous is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = previous

    return wrapper


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


def friendly_errors(task: Callable[[DictConfig], object] | None = None, *, keep_results: bool = False):
    """Turn a user error into one line on stderr and exit status 2, with the run folder given back as it was
    before (`run_folder.undo_run`). Entry points whose folder keeps results that a later run reuses (an
    evaluation trial's trained pipeline) keep what they made: `keep_results=True`. A full disk during training
    keeps everything, since the run resumes from its checkpoints."""
    if task is None:
        return functools.partial(friendly_errors, keep_results=keep_results)

    @functools.wraps(task)
    def wrapper(cfg: DictConfig):
        try:
            return task(cfg)
        except Exception as raised:
            err = _user_error(raised)
            if err is None:
                raise
            if not isinstance(err, DiskFullError):
                undo_run(HydraConfig.get().runtime.output_dir, keep_results)
            exit_with(str(err))

    return wrapper
