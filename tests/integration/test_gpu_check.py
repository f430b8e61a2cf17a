"""The GPU check runs end to end on the CPU with the tiny model (`--device cpu`): every row, one table. Slow
(about 100 s): `make test-slow` runs it, as the rehearsal before a GPU session."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_prints_its_table_on_the_cpu(tmp_path):
    done = subprocess.run(
        ["bash", str(REPO / "experiments" / "gpu_check.sh"), "--device", "cpu", "--work", str(tmp_path)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    number = r"\d+\.\d\d"
    for label in ("full, 32-true \\+ TF32, ours", "full, 32-true \\+ TF32, released capture",
                  "full, bf16-mixed, ours", "24gb", "16gb", "12gb \\(bf16-mixed\\)",
                  "SDXL 1024 px, LoRA phase 2 \\(rank 32\\), no prior, 32-true \\+ TF32",
                  "SDXL 1024 px, LoRA phase 2 \\(rank 32\\), no prior, bf16-mixed",
                  "FLUX.1-dev 1024 px, memory=qlora_nf4, no prior", "FLUX.1-dev 1024 px, memory=lora_bf16, no prior",
                  "SD 3.5 Medium 1024 px, full phase 2, memory=12gb, no prior"):
        assert any(re.fullmatch(rf"\| {label} \| {number} \| n/a \| {number} \| n/a \|", line) for line in table), label
    assert any(re.fullmatch(rf"\| ours / released capture, 32-true \+ TF32 \| {number}x \| \| {number}x \| \|", line)
               for line in table)
    assert any(line.startswith("| class images (2, cached beforehand) |") for line in table)
    official = next(line for line in table if line.startswith("| `bas-train experiment=official` (2 + 2 steps)"))
    assert re.search(r"\d+\.\d s wall \| loop \d+\.\d s \| phase 1 \d+\.\d s \| phase 2 \d+\.\d s", official)
    assert any(re.match(rf"\| generation \(\d+ images, 5 DDIM steps.*\| {number} images/s \|", line) for line in table)
    assert (tmp_path / "official" / "pipeline" / "model_index.json").is_file()
