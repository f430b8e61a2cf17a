"""The benchmarks run each measurement in a process of its own (so each peak memory is that row's) and read
back its one `RESULT <json>` line."""

from __future__ import annotations

import json
import os
import subprocess

PREFIX = "RESULT "


def report(result: dict) -> None:
    """In the child: hand the measurement to the parent."""
    print(PREFIX + json.dumps(result))


class ChildFailed(RuntimeError):
    """The child gave no result; the message is the end of its output."""


def run(command: list[str], what: str, env: dict | None = None) -> dict:
    """In the parent: run the child offline and return its result; ChildFailed (with the end of its output)
    when it gave none."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    line = next((text for text in done.stdout.splitlines() if text.startswith(PREFIX)), None)
    if line is None:
        raise ChildFailed(f"{what} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return json.loads(line[len(PREFIX):])
