"""Training-step speed and peak memory, with our attention capture vs the released code's.

Each row runs in its own process (so peak memory is that row's): the real training run built from the
Hydra configs, timed over a few steps after a warm-up step. "released" replaces every attention
processor with an explicit softmax one and keeps every map of side <= latent/2 with its graph, as the
released script did; "loss_layers" (ours) touches only the loss layers and keeps SDPA elsewhere.

    python experiments/bench_train_step.py                     # tiny @ 64 px and SD 2.1-base arch @ 256 px
    python experiments/bench_train_step.py --rows sd21_base_arch:512 --phase 2 --device cuda
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import child_process


def child(model: str, resolution: int, capture: str, phase: int, steps: int, device: str) -> dict:
    import lightning as L
    import torch

    from break_a_scene.config import compose  # the same composition the entry point does
    from break_a_scene.training import build_run

    class StepTimer(L.Callback):
        def __init__(self):
            self.times = []

        def on_train_batch_start(self, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            if device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    total = steps + 1  # one warm-up step
    phases = [f"method.phase1_steps={total}", "method.phase2_steps=0"] if phase == 1 else \
        ["method.phase1_steps=0", f"method.phase2_steps={total}"]
    overrides = [
        f"model={model}", f"model.resolution={resolution}", f"method.attention_capture={capture}", *phases,
        "logger=none", "data.prior_preservation.enabled=false", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}",
        "callbacks.export=null",
    ]
    cfg = compose("train", overrides, Path(os.environ.get("TMPDIR", "/tmp")) / "bas-bench" / "run")
    trainer, module, datamodule = build_run(cfg)
    timer = StepTimer()
    trainer.callbacks.append(timer)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=datamodule)
    measured = timer.times[1:]
    return {
        "model": model, "resolution": resolution, "capture": capture, "phase": phase, "device": device,
        "steps_per_s": len(measured) / sum(measured),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["tiny:64", "sd21_base_arch:256"], help="model:resolution")
    parser.add_argument("--phase", type=int, default=1, choices=[1, 2])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, resolution, capture = args.child
        child_process.report(child(model, int(resolution), capture, args.phase, args.steps, args.device))
        return
    results = []
    for row in args.rows:
        model, resolution = row.split(":")
        for capture in ("loss_layers", "released"):
            command = [sys.executable, __file__, "--child", model, resolution, capture, "--phase", str(args.phase),
                       "--steps", str(args.steps), "--device", args.device]
            results.append(child_process.run(command, f"benchmark row {row} {capture}"))
            print(f"done {row} {capture}", file=sys.stderr)
    memory = "peak_cuda_gib" if args.device == "cuda" else "peak_rss_gib"
    print(f"\nphase {args.phase} training step, {args.steps} timed steps after 1 warm-up, device {args.device}")
    print(f"| model | px | attention capture | steps/s | {memory.replace('_', ' ')} |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['resolution']} | {r['capture']} | {r['steps_per_s']:.3f} | {r[memory]:.2f} |")


if __name__ == "__main__":
    main()
