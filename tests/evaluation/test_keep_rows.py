"""experiments/toyworld/keep_rows.py: only finished trials, only their rows and summary, same layout."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_keeps_finished_trials_rows_only(tmp_path):
    out = tmp_path / "out"
    finished = out / "break_a_scene" / "scene_000" / "seed_1"
    unfinished = out / "ti_m" / "scene_003" / "seed_0"
    for trial in (finished, unfinished):
        (trial / "pipeline").mkdir(parents=True)
        (trial / "pipeline" / "unet.safetensors").write_bytes(b"weights")
        (trial / "rows.csv").write_text("method,identity\nm,0.5\n")
    (finished / "summary.json").write_text('{"identity": 0.5}')
    done = subprocess.run([sys.executable, str(REPO / "experiments/toyworld/keep_rows.py"), str(out),
                           str(tmp_path / "kept")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 finished trials kept" in done.stdout
    kept = sorted(str(p.relative_to(tmp_path / "kept")) for p in (tmp_path / "kept").rglob("*") if p.is_file())
    assert kept == ["break_a_scene/scene_000/seed_1/rows.csv", "break_a_scene/scene_000/seed_1/summary.json"]
    assert (tmp_path / "kept" / "break_a_scene/scene_000/seed_1/rows.csv").read_text() == "method,identity\nm,0.5\n"
