"""One toy trial (bas-evaluate: train 300 + 200 steps on the shipped toy scene, sample 24 images, judge them),
timed with the code of another git revision and with this working tree, side by side on this machine, and
their rows compared value by value (same seed: equal code paths give equal numbers).

    python experiments/bench_toy_trial.py --before 63117a5             # one trial each, alternating
    python experiments/bench_toy_trial.py --before 63117a5 --jobs 1 2  # also two trials at once, a core each

`--jobs N` runs N trials (training seeds 0..N-1) at once, each with cores/N threads, as
`hydra/launcher=local_parallel` does in a sweep; its wall time per trial is a sweep's throughput.
The revision is checked out into a temporary git worktree, removed afterwards.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINING = re.compile(r"training loop ([0-9.]+) s")


def trial_command(out_dir: Path, seed: int) -> list[str]:
    return [sys.executable, "-m", "break_a_scene.cli.evaluate", "experiment=toyworld",
            "evaluation=toyworld", "evaluation.progress=false", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", f"evaluation.out_dir={out_dir}", f"seed={seed}"]


def run_trials(tree: Path, out_dir: Path, jobs: int) -> dict:
    """`jobs` trials at once with the code of `tree`; wall seconds per trial and each one's training loop."""
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PROJECT_ROOT": str(out_dir)}
    start = time.perf_counter()
    children = [subprocess.Popen(trial_command(out_dir, seed), cwd=tree, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for seed in range(jobs)]
    outputs = [child.communicate()[0] for child in children]
    wall = time.perf_counter() - start
    for child, output in zip(children, outputs):
        if child.returncode:
            raise SystemExit(f"the trial with the code of {tree} failed:\n{output[-3000:]}")
    training = [float(match.group(1)) for output in outputs for match in TRAINING.finditer(output)]
    return {"per_trial_s": wall / jobs, "training_s": sum(training) / len(training)}


def rows(out_dir: Path) -> list[dict]:
    found = sorted(out_dir.rglob("rows.csv"))
    return [row for path in found for row in csv.DictReader(path.open())]


def compare(before: list[dict], after: list[dict]) -> str:
    if len(before) != len(after) or not before:
        return f"{len(before)} rows before, {len(after)} after"
    metrics = [key for key in before[0] if key not in ("image", "split") and key in after[0]]
    differing = sum(a[key] != b[key] for a, b in zip(before, after) for key in metrics)
    return f"{len(before)} rows x {len(metrics)} columns: {differing} values differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git revision of the old path")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1], help="trials at once (each count in turn)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bas-bench-trial-") as tmp:
        old_tree = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old_tree), args.before],
                       check=True)
        try:
            times: dict[tuple[str, int], list[float]] = {}
            for repeat in range(args.repeats):
                for jobs in args.jobs:
                    for label, tree in (("before", old_tree), ("after", ROOT)):
                        result = run_trials(tree, Path(tmp) / f"{label}_{jobs}_{repeat}", jobs)
                        times.setdefault((label, jobs), []).append(result["per_trial_s"])
                        print(f"{label}, {jobs} at once (repeat {repeat}): {result['per_trial_s']:.1f} s a trial, "
                              f"training loop {result['training_s']:.1f} s", flush=True)
            print(f"\nwall seconds a trial ({os.cpu_count()} cores, mean of {args.repeats}):")
            for (label, jobs), values in times.items():
                print(f"  {label:6s} {jobs} at once: {sum(values) / len(values):6.1f}")
            first = args.jobs[0]
            print(f"rows, {first} at once, first repeat:",
                  compare(rows(Path(tmp) / f"before_{first}_0"), rows(Path(tmp) / f"after_{first}_0")))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=True)


if __name__ == "__main__":
    main()
