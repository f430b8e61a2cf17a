"""Every `bas-*` command the README, docs/ and the configs' comments show is one a user can paste: its
overrides parse as Hydra reads them, and a single run's overrides compose with the real configs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from break_a_scene.config import compose

REPO = Path(__file__).resolve().parents[2]
HYDRA_CLIS = {"bas-train": "train", "bas-generate": "generate", "bas-evaluate": "evaluate", "bas-edit": "edit",
              "bas-masks": "masks", "bas-pretrain": "pretrain", "bas-save-model": "save_model"}
FLAGS_WITH_VALUE = {"-cd", "--config-dir", "-cn", "--config-name", "-cp", "--config-path"}


def _code_lines(path: Path) -> list[str]:
    """Lines of fenced code blocks (Markdown) or of comments (YAML), `\\` continuations joined."""
    text = path.read_text()
    if path.suffix == ".md":
        lines = [line for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S) for line in block.splitlines()]
    else:
        lines = [line.lstrip("#").strip() for line in text.splitlines() if line.lstrip().startswith("#")]
    joined, pending = [], ""
    for line in lines:
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        joined.append(pending)
        pending = ""
    return joined


def documented_commands() -> list[tuple[str, str]]:
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "conf").rglob("*.yaml"))]
    found = []
    for path in files:
        for line in _code_lines(path):
            command = re.split(r"\s{2,}[#(]| # ", line)[0].strip()  # the comment after a command
            command = re.sub(r"<(?!asset\d)[a-z_]+>", "PLACEHOLDER", command)  # <run>, <date>: the user's own
            if command.split(" ")[0] in HYDRA_CLIS:
                found.append((str(path.relative_to(REPO)), command))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_every_kind():
    programs = {command.split(" ")[0] for _, command in COMMANDS}
    assert {"bas-train", "bas-generate", "bas-edit", "bas-evaluate", "bas-masks"} <= programs


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}:{c[:60]}" for w, c in COMMANDS])
def test_documented_command_parses_and_composes(where, command, tmp_path):
    program, *words = shlex.split(command)
    overrides, multirun, i = [], False, 0
    while i < len(words):
        if words[i] in FLAGS_WITH_VALUE:
            multirun, i = True, i + 2  # another config folder: its sweeps are composed by their own tests
            continue
        if words[i] in ("-m", "--multirun"):
            multirun = True
        else:
            overrides.append(words[i])
        i += 1
    OverridesParser.create().parse_overrides(overrides)  # raises on what Hydra cannot read
    if not multirun:
        compose(HYDRA_CLIS[program], overrides, tmp_path / "run")
