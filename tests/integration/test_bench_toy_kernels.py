"""experiments/bench_toy_kernels.py runs on the shipped toy model and accounts for every convolution and
attention call of a toy UNet forward. Slow (about 40 s): `make test-slow`."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from break_a_scene.config import ASSETS_DIR

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_toy_kernels_times_every_call_of_a_forward(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "experiments" / "bench_toy_kernels.py"), "--steps", "1",
                           "--repeats", "1"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1",
                               "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for phase in (1, 2):
        assert any(re.fullmatch(rf"\| {phase} \| \d+\.\d \| \d+\.\d \| \d+\.\d \|", line) for line in table)
    unet = UNet2DConditionModel.from_pretrained(ASSETS_DIR / "toyworld" / "model", subfolder="unet")
    convs = sum(isinstance(layer, torch.nn.Conv2d) for layer in unet.modules())
    rows = [line.split(" | ") for line in table if line.startswith("| conv ")]
    assert sum(int(row[1]) for row in rows) == convs  # each conv module runs once in a forward
    total = next(line for line in table if line.startswith("| all convolutions of the forward |"))
    assert int(total.split(" | ")[1]) == convs
    # self- and cross-attention in each transformer block of the UNet: the 16x16 level's self-attention first
    attention = [line for line in table if line.startswith("| attention ")]
    blocks = sum(type(layer).__name__ == "BasicTransformerBlock" for layer in unet.modules())
    assert sum(int(line.split(" | ")[1]) for line in attention) == 2 * blocks
    assert any(line.startswith("| attention q [1, 8, 256, 8] k [1, 8, 256, 8]") for line in attention)
