"""The model configs the contract suite runs, found from conf/model/ alone (a new family joins by its YAML): every
config that builds a model without weights on the default device (the tiny ones, the toy architectures) or loads
one the package ships (the toy models). The shipped ones run in the default suite, the others in `make test-slow`."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.utils import get_method
from omegaconf import OmegaConf

from break_a_scene.families.base import ModelFamily

REPO = Path(__file__).resolve().parents[2]
TOY_SCENE = REPO / "src" / "break_a_scene" / "assets" / "scenes" / "toy_star_ring"


@dataclass(frozen=True)
class ModelCase:
    config: str  # conf/model/<config>.yaml
    family: type[ModelFamily]
    shipped: bool  # loads the package's own weights (else: random init from the config)
    resolution: int

    @property
    def kind(self) -> str:
        return self.family.denoiser_name  # "unet" or "transformer"


def model_cases() -> list[ModelCase]:
    cases = []
    for file in sorted((REPO / "conf" / "model").glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(file), resolve=False)
        config = raw.get("components") or {}
        target = str(config.get("_target_", ""))
        shipped = "bas.asset" in str(config.get("pretrained_model_name_or_path", ""))
        tiny = target.endswith(".build") and "device" not in config
        if shipped or tiny:
            family = get_method(target).__self__
            cases.append(ModelCase(file.stem, family, shipped, int(raw["resolution"])))
    return cases


CASES = model_cases()


def case_params() -> list:
    return [pytest.param(case, id=case.config, marks=() if case.shipped else pytest.mark.slow) for case in CASES]


def invoke(main, argv: list[str]) -> tuple[int, str]:
    """Run a Hydra entry point in this process as its console script would; (exit status, stderr)."""
    err = io.StringIO()
    old = sys.argv
    sys.argv = ["entry", *argv]
    try:
        with contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exit_info:
                code = exit_info.code or 0
    finally:
        sys.argv = old
    return code, err.getvalue()


def one_line(err: str) -> str:
    """The single `error: ` line a refusal prints (asserted: nothing else on stderr, no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-3000:]
    return lines[0]


def documented_blocks(page: Path, marker: str = "# reload: ") -> dict[str, str]:
    """The python blocks of a docs page whose first line is `# reload: <label>`, by label."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    return {block.splitlines()[0][len(marker):].strip(): block for block in blocks if block.startswith(marker)}
