"""The run folder that Hydra makes for each command: checked before Hydra writes into it, and on a user error
given back as it was: what this run added removed, and the earlier run's record put back.

`RunFolderGuard` (a Hydra callback, conf/hydra/default.yaml) runs before Hydra creates the folder. It refuses
a folder that is not writable, and one that already holds another run (a `.hydra/` folder) unless the
command says `overwrite=true` or resumes from a checkpoint; then it records what the folder held, in the
environment, so that the task (in this process or in a launcher's worker) knows what it may remove. Hydra
rewrites `.hydra/` and appends to the run's log before the task starts, so a copy of the earlier `.hydra/`
and the logs' lengths are kept too, to put them back.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from break_a_scene.errors import UserInputError
from break_a_scene.outputs import check_writable

_BEFORE = "BREAK_A_SCENE_RUN_FOLDER_BEFORE"


def exit_with(message: str) -> None:
    """The one line every user error ends with, and exit status 2."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)


HYDRA_RECORD = ".hydra"


def _record(folder: Path) -> None:
    entries = sorted(child.name for child in folder.iterdir()) if folder.is_dir() else None
    first_new = None  # the outermost folder that Hydra will make for this run
    if entries is None:
        first_new = folder
        while not first_new.parent.exists():
            first_new = first_new.parent
    state = {"folder": str(folder), "entries": entries, "first_new": first_new and str(first_new),
             "record_copy": None, "logs": {}}
    if entries is not None and (folder / HYDRA_RECORD).is_dir():
        copy = tempfile.mkdtemp(prefix="bas-run-record-")
        atexit.register(shutil.rmtree, copy, ignore_errors=True)
        shutil.copytree(folder / HYDRA_RECORD, Path(copy) / HYDRA_RECORD)
        state["record_copy"] = copy
        state["logs"] = {log.name: log.stat().st_size for log in folder.glob("*.log") if log.is_file()}
    os.environ[_BEFORE] = json.dumps(state)


def _other_rank() -> bool:
    """A process that a distributed launcher started after the first (Lightning's DDP launcher re-runs the
    command, torchrun and SLURM start every rank): the folder is the first rank's, already checked."""
    return any(int(os.environ.get(name, "0") or 0) > 0 for name in ("LOCAL_RANK", "RANK", "SLURM_PROCID", "NODE_RANK"))


class RunFolderGuard(Callback):
    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if _other_rank():
            return
        HydraConfig.instance().set_config(config)  # as Hydra does next: the folder may name ${hydra:...} values
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


def _restore_record(folder: Path, state: dict) -> None:
    """Put back the earlier run's `.hydra/` and cut its logs back to their lengths before this run."""
    if state["record_copy"] and (Path(state["record_copy"]) / HYDRA_RECORD).is_dir():
        _remove(folder / HYDRA_RECORD)
        shutil.copytree(Path(state["record_copy"]) / HYDRA_RECORD, folder / HYDRA_RECORD)
    for name, size in state["logs"].items():
        log = folder / name
        if log.is_file() and log.stat().st_size > size:
            with log.open("r+b") as f:
                f.truncate(size)


def undo_run(output_dir: str | Path, keep_results: bool = False) -> None:
    """Give the run folder back as it was before this run: remove the entries this run added (with
    `keep_results`, only Hydra's own: `.hydra/` and logs), restore an earlier run's record, and remove the
    folder when this run made it and leaves it empty. Without a record (no guard ran) nothing is touched."""
    state = json.loads(os.environ.get(_BEFORE, "null"))
    if state is None:
        return
    output_dir = Path(output_dir).absolute()
    folder, before = Path(state["folder"]), state["entries"]
    first_new = Path(state["first_new"]) if state["first_new"] else None
    if folder in output_dir.parents:  # a job of a multirun: its own subfolder, when the sweep made it
        top = output_dir.relative_to(folder).parts[0]
        if before is not None and top in before:
            return
        before, first_new = None, first_new or folder / top
    elif output_dir != folder:
        return
    if not output_dir.is_dir():
        return
    for child in output_dir.iterdir():
        new = before is None or child.name not in before
        if new and (not keep_results or child.name == HYDRA_RECORD or child.suffix == ".log"):
            _remove(child)
    if before is not None:
        _restore_record(output_dir, state)
        return
    made = [output_dir, *output_dir.parents]  # this run's folder, and the ones Hydra made above it
    made = made[: made.index(first_new) + 1] if first_new in made else made[:1]
    for path in made:
        if any(path.iterdir()):
            break
        path.rmdir()
