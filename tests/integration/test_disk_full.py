"""A full disk, on a real small disk (a tmpfs mounted for the test; skipped where mounting is not allowed):
refused before training when the export cannot fit; when it fills up during training, one line says what to
free and how to resume, the checkpoints are kept, and following it finishes the run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import lightning as L
import pytest

from break_a_scene.cli import train as train_cli
from tests.helpers import FAST, assert_one_line, run_entry


@pytest.fixture
def small_disk(tmp_path):
    def mount(megabytes: int):
        disk = tmp_path / f"disk{megabytes}"
        disk.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(disk)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small disk here: {done.stderr.strip()}")
        mounted.append(disk)
        return disk

    mounted = []
    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], check=False)


class FillDisk(L.Callback):
    """Fills the disk holding `path` once training ends, as another job writing to the disk would."""

    def __init__(self, path: str):
        self.path = path

    def on_train_end(self, trainer, module) -> None:
        free = shutil.disk_usage(Path(self.path).parent).free
        with open(self.path, "wb") as f:
            f.write(b"\0" * max(free - 4096, 0))


def test_an_export_that_cannot_fit_is_refused_before_training(small_disk, scene_dir, capsys):
    out = small_disk(8) / "run"
    code, err = run_entry(train_cli.main, [*FAST, f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}"], capsys)
    assert code == 2
    assert_one_line(err, "the export needs about 15 MB but the disk holding callbacks.export.dirpath=",
                    "MB free; free space there")
    assert not out.exists()


def test_a_disk_that_fills_up_during_training_says_how_to_resume(small_disk, scene_dir, capsys):
    disk = small_disk(96)
    out, filler = disk / "run", disk / "other_job.bin"
    command = [*FAST, f"data.scene.folder={scene_dir}", f"hydra.run.dir={out}", "callbacks=checkpoint",
               "callbacks.checkpoint.every_n_train_steps=6", "callbacks.samples=null"]
    fill = ["+callbacks.fill._target_=tests.integration.test_disk_full.FillDisk", f"+callbacks.fill.path={filler}"]
    code, err = run_entry(train_cli.main, [*command, *fill], capsys)
    assert code == 2
    last = out / "checkpoints" / "last.ckpt"
    assert_one_line(err, f"the disk holding '{out}' filled up during training", "free space there",
                    f"then run the same command with ckpt_path={last}")
    assert last.is_file() and not (out / "pipeline").exists()
    assert not list(out.glob(".pipeline.partial-*"))  # nothing half-written

    filler.unlink()  # the user frees space and follows the message
    code, err = run_entry(train_cli.main, [*command, f"ckpt_path={last}"], capsys)
    assert code == 0, err[-2000:]
    assert (out / "pipeline" / "break_a_scene.json").is_file()
