"""Operators and host synchronisations per training step: what GPU speed depends on, counted on the CPU.

At batch 1 on a GPU a Break-A-Scene step is bound by kernel launches and by the host waiting for the device,
not by arithmetic. Both can be counted without a GPU: the profiler counts the aten operators a step
dispatches (the outermost ones: an operator's own sub-operators are not counted, so a multi-tensor `_foreach_`
operator is one, about one launch on a GPU), and a TorchFunctionMode counts the calls that make the host
wait for the device when the tensor lives there (`.item()`, `bool(t)`, `.tolist()`, `.cpu()`, `nonzero`,
boolean-mask indexing). Calls that stay on the host on a GPU are left out: the data loader's, and torch's
optimizers reading their host-side `step` counters (the fused CUDA AdamW reads none). A step is counted from
its start to the next step's start, so Lightning's logging, the progress bar and the callbacks are in it.

"before" is this project before its GPU speed work, as far as switches bring it back: latents encoded every
step, the per-tensor AdamW loop, and the logging (with the per-token IoU) on every step. Phase 1 before that
also trained the whole 49k-row embedding matrix; that path is gone, so "before" understates phase 1's change.

    python experiments/bench_step_proxies.py                       # tiny @ 64 px, SD 2.1-base arch @ 256 px
    python experiments/bench_step_proxies.py --rows tiny:64
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import child_process

SETTINGS = {
    "before": ["method.cache_latents=false", "optimizer.implementation=for_loop", "trainer.log_every_n_steps=1"],
    "after": [],
}
PHASE_STEPS = 3  # per phase; the second step of each phase is counted (the first warms caches up)


def child(model: str, resolution: int, setting: str) -> dict:
    import lightning as L
    import torch
    from torch.overrides import TorchFunctionMode

    from break_a_scene.config import compose
    from break_a_scene.training import build_run

    tensor = torch.Tensor
    syncing = {
        tensor.item: "item", tensor.tolist: "tolist", tensor.__bool__: "bool", tensor.__int__: "int",
        tensor.__float__: "float", tensor.__index__: "index", tensor.cpu: "cpu", tensor.numpy: "numpy",
        tensor.nonzero: "nonzero", torch.nonzero: "nonzero", torch.masked_select: "masked_select",
        tensor.masked_select: "masked_select",
    }
    host_side = (f"{os.sep}torch{os.sep}utils{os.sep}data{os.sep}", f"{os.sep}torch{os.sep}optim{os.sep}",
                 f"break_a_scene{os.sep}data.py")

    class SyncCounter(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.counts: Counter = Counter()

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = syncing.get(func)
            if name is None and func is tensor.__getitem__ and _bool_index(args):
                name = "bool-mask index"
            if name is not None and not any(part in _caller() for part in host_side):
                self.counts[name] += 1
            return func(*args, **(kwargs or {}))

    def _caller() -> str:
        """The file that called the tensor method (past torch's own dispatch frames)."""
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.endswith((__file__, "overrides.py", "_tensor.py")):
            frame = frame.f_back
        return frame.f_code.co_filename if frame is not None else ""

    def _bool_index(args) -> bool:
        index = args[1] if len(args) > 1 else None
        items = index if isinstance(index, tuple) else (index,)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)

    class Count(L.Callback):
        """Counts steps 1 (phase 1) and PHASE_STEPS + 1 (phase 2), from their start to the next step's start."""

        def __init__(self):
            self.rows, self.active = {}, None

        def _stop(self):
            if self.active is not None:
                phase, profiler, counter = self.active
                counter.__exit__(None, None, None)
                profiler.__exit__(None, None, None)
                ops = sum(1 for event in profiler.events() if event.name.startswith("aten::") and not (
                    event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::")))
                self.rows[phase] = {"ops": ops, "syncs": sum(counter.counts.values()), "by": dict(counter.counts)}
                self.active = None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self._stop()
            if batch_idx in (1, PHASE_STEPS + 1):
                profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                profiler.__enter__()
                counter = SyncCounter()
                counter.__enter__()
                self.active = (module.phase, profiler, counter)

        def on_train_end(self, trainer, module):
            self._stop()

    overrides = [
        f"model={model}", f"model.resolution={resolution}", f"method.phase1_steps={PHASE_STEPS}",
        f"method.phase2_steps={PHASE_STEPS}", "logger=csv", "data.prior_preservation.enabled=false",
        "trainer.accelerator=cpu", "trainer.enable_model_summary=false", "callbacks.export=null",
        "callbacks.samples=null", *SETTINGS[setting],
    ]
    run_dir = Path(os.environ.get("TMPDIR", "/tmp")) / "bas-proxies" / f"{model}-{setting}"
    cfg = compose("train", overrides, run_dir)
    trainer, module, datamodule = build_run(cfg)
    count = Count()
    trainer.callbacks.append(count)
    trainer.fit(module, datamodule=datamodule)
    return {"model": model, "resolution": resolution, "setting": setting, "phases": count.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["tiny:64", "sd21_base_arch:256"], help="model:resolution")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, resolution, setting = args.child
        child_process.report(child(model, int(resolution), setting))
        return
    results = []
    for row in args.rows:
        model, resolution = row.split(":")
        for setting in SETTINGS:
            command = [sys.executable, __file__, "--child", model, resolution, setting]
            results.append(child_process.run(command, f"proxy row {row} {setting}"))
            print(f"done {row} {setting}", file=sys.stderr)
    print("\noperators (outermost aten events) and host synchronisations per training step, CPU")
    print("| model | px | setting | phase | operators | host syncs | which |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for phase, counts in sorted(r["phases"].items()):
            which = ", ".join(f"{name} {n}" for name, n in sorted(counts["by"].items())) or "-"
            print(f"| {r['model']} | {r['resolution']} | {r['setting']} | {phase} | {counts['ops']} | "
                  f"{counts['syncs']} | {which} |")


if __name__ == "__main__":
    main()
