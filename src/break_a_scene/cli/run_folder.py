"""The run folder that Hydra makes for each command: checked before Hydra writes into it, and on a user error
cleared of exactly what this run added, nothing else.

`RunFolderGuard` (a Hydra callback, conf/hydra/default.yaml) runs before Hydra creates the folder. It refuses
a folder that is not writable, and one that already holds another run (a `.hydra/` folder) unless the
command says `overwrite=true` or resumes from a checkpoint; then it records what the folder held, in the
environment, so that the task (in this process or in a launcher's worker) knows what it may remove.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from break_a_scene.errors import UserInputError
from break_a_scene.outputs import check_writable

_BEFORE = "BREAK_A_SCENE_RUN_FOLDER_BEFORE"


def exit_with(message: str) -> None:
    """The one line every user error ends with, and exit status 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


def _record(folder: Path) -> None:
    entries = sorted(child.name for child in folder.iterdir()) if folder.is_dir() else None
    os.environ[_BEFORE] = json.dumps({"folder": str(folder), "entries": entries})


def _other_rank() -> bool:
    """A process that a distributed launcher started after the first (Lightning's DDP launcher re-runs the
    command, torchrun and SLURM start every rank): the folder is the first rank's, already checked."""
    return any(int(os.environ.get(name, "0") or 0) > 0 for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID", "NODE_RANK"))


class RunFolderGuard(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if _other_rank():
            return
        folder = Path(str(config.hydra.run.dir)).absolute()
        try:
            check_writable(folder, "hydra.run.dir")
        except UserInputError as err:
            exit_with(str(err))
        if (folder / ".hydra").is_dir() and not (config.get("overwrite") or config.get("ckpt_path")):
            exit_with(
                f"'{folder}' already holds another run (it has a .hydra/ folder); choose another hydra.run.dir, "
                f"or add overwrite=true to write into it anyway."
            )
        _record(folder)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        folder = Path(str(config.hydra.sweep.dir)).absolute()
        try:
            check_writable(folder, "hydra.sweep.dir")
        except UserInputError as err:
            exit_with(str(err))
        _record(folder)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_what_this_run_created(output_dir: str | Path) -> None:
    """Remove the run folder's entries that were not there before this run started, and the folder itself
    when this run made it. Without a record (no guard ran) nothing is removed."""
    state = json.loads(os.environ.get(_BEFORE, "null"))
    if state is None:
        return
    output_dir = Path(output_dir).absolute()
    folder, before = Path(state["folder"]), state["entries"]
    if output_dir == folder:  # a single run
        if before is None:
            _remove(output_dir)
            return
        for child in output_dir.iterdir():
            if child.name not in before:
                _remove(child)
    elif folder in output_dir.parents:  # a job of a multirun: its own subfolder, when the sweep made it
        top = output_dir.relative_to(folder).parts[0]
        if before is None or top not in before:
            _remove(output_dir)
