"""The benchmarks run each measurement in a process of its own (so each peak memory is that row's) and read
back its one `RESULT <json>` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PREFIX = "RESULT "


def report(result: dict) -> None:
    """In the child: hand the measurement to the parent."""
    print(PREFIX + json.dumps(result))


def run(command: list[str], what: str, env: dict | None = None) -> dict:
    """In the parent: run the child offline and return its result; its output is shown if it gave none."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    line = next((text for text in done.stdout.splitlines() if text.startswith(PREFIX)), None)
    if line is None:
        print(done.stdout[-2000:] + done.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{what} failed (its output is above)")
    return json.loads(line[len(PREFIX):])
