"""Composing the real Hydra configs in-process, as the entry points do."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import lightning as L
from omegaconf import DictConfig

from break_a_scene.config import compose

# a fast tiny run: few steps, no progress bar, no logger, prior preservation off
FAST = [
    "model=tiny",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "logger=none",
    "callbacks.samples=null",
    "data.prior_preservation.enabled=false",
    "method.phase1_steps=3",
    "method.phase2_steps=3",
]


def compose_config(name: str, overrides: list[str], tmp_path: Path) -> DictConfig:
    """The composed config, with outputs under tmp_path/run and caches under tmp_path."""
    return compose(name, overrides, tmp_path / "run")


class UnetChecksum(L.Callback):
    """Writes a hash of the UNet's weights per rank at the end of training (for the DDP test)."""

    def __init__(self, path: str):
        self.path = path

    def on_train_end(self, trainer, module) -> None:
        digest = hashlib.sha1()
        for param in module.unet.parameters():
            digest.update(param.detach().cpu().numpy().tobytes())
        Path(f"{self.path}.rank{trainer.global_rank}").write_text(digest.hexdigest())


class KillAtStep(L.Callback):
    """Kills its own process with SIGKILL once `step` optimizer steps are done: a crash no handler sees."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillDuringExport(L.Callback):
    """Kills its own process with SIGKILL after the export has written the pipeline's files but before it
    has moved them into place."""

    def on_fit_start(self, trainer, module) -> None:
        original = module.family.save_pipeline

        def save_then_die(*args, **kwargs):
            original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        module.family.save_pipeline = save_then_die


def run_entry(main, argv: list[str], capsys) -> tuple[int, str]:
    """Run a Hydra entry point in this process as its console script would (`argv` without the program),
    returning its exit status and what it printed on stderr."""
    import sys

    import pytest

    old = sys.argv
    sys.argv = ["entry", *argv]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
            raise SystemExit(0)
    finally:
        sys.argv = old
    return exit_info.value.code or 0, capsys.readouterr().err


def assert_one_line(err: str, *expected: str) -> None:
    """A user error: one line starting with `error: `, no traceback, holding each expected piece."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG that claims `width` x `height` pixels and holds none: what an image too large to decode looks like
    to a reader that checks the header first (a real 20000 x 20000 file takes minutes to write)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path
