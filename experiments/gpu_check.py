"""One GPU check: training speed and peak memory per memory preset and precision, the released code's
attention capture beside ours, SDXL's and the MM-DiTs' (FLUX.1-dev, SD 3.5 Medium) big-model settings,
`experiment=official` end to end, and generation speed, as one markdown table.

Nothing is downloaded: the SD 2.1-base architecture with random weights, made directly on the GPU. Steps
run `experiment=official` (512 px, prior preservation: a batch of the scene and a class image), each row in
its own process so each peak is that row's own. The class images are made once first (timed on their own)
and every later run reads them from the cache.

    bash experiments/gpu_check.sh                  # one GPU, SD 2.1-base architecture, 512 px
    bash experiments/gpu_check.sh --compile        # plus a row with the UNet compiled (CUDA graphs)
    bash experiments/gpu_check.sh --device cpu     # the same path with the tiny model on the CPU (CI)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import child_process

# (label, overrides) of the step rows: the default first, then the released capture and the precisions,
# then the memory presets
ROWS = [
    ("full, 32-true + TF32, ours", []),
    ("full, 32-true + TF32, released capture", ["method.attention_capture=released"]),
    ("full, 16-mixed, ours", ["trainer.precision=16-mixed"]),
    ("full, 16-mixed, released capture", ["trainer.precision=16-mixed", "method.attention_capture=released"]),
    ("full, bf16-mixed, ours", ["trainer.precision=bf16-mixed"]),
    ("24gb", ["memory=24gb"]),
    ("16gb", ["memory=16gb"]),
    ("12gb (bf16-mixed)", ["memory=12gb"]),
]
COMPILED = ("full, 32-true + TF32, ours, compiled (reduce-overhead)", ["method.compile_denoiser=reduce-overhead"])
# SDXL's architecture (random weights) at 1024 px with the LoRA phase 2 (target: <= 24 GiB), without prior
# preservation (its class images would be made at 1024 px first)
SDXL_ROWS = [
    ("SDXL 1024 px, LoRA phase 2 (rank 32), no prior, 32-true + TF32",
     ["variant=lora", "data.prior_preservation.enabled=false"]),
    ("SDXL 1024 px, LoRA phase 2 (rank 32), no prior, bf16-mixed",
     ["variant=lora", "data.prior_preservation.enabled=false", "trainer.precision=bf16-mixed"]),
]
# the MM-DiTs' architectures (random weights) at 1024 px, no prior preservation. Targets: FLUX.1-dev with a LoRA
# phase 2 <= 24 GiB, SD 3.5 Medium with a full phase 2 (text encoders frozen) <= 40 GiB; the README's computed
# budgets (experiments/memory_budget.py) are these rows' weights and optimizer state, before activations
MMDIT_ROWS = [
    ("FLUX.1-dev 1024 px, memory=qlora_nf4, no prior", "flux", ["memory=qlora_nf4"]),
    ("FLUX.1-dev 1024 px, memory=lora_bf16, no prior", "flux", ["memory=lora_bf16"]),
    ("SD 3.5 Medium 1024 px, full phase 2, memory=12gb, no prior", "sd3", ["memory=12gb"]),
]
QUIET = ["logger=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def model_overrides(args, model: str | None = None) -> list[str]:
    model = model or args.model
    overrides = [f"model={model}", f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}",
                 f"paths.cache_dir={args.work / 'cache'}",
                 f"data.prior_preservation.num_class_images={args.class_images}"]
    if model.endswith("_arch"):
        overrides.append(f"model.components.device={args.device}")
    else:  # the CPU run checks the path, quickly
        overrides.append("data.prior_preservation.num_inference_steps=5")
    return ["experiment=official", *overrides]


# ---- children: each runs in its own process -----------------------------------------------------------------
def child_classes(args, payload=None) -> dict:
    from break_a_scene.config import compose
    from break_a_scene.training import check_inputs, prepare_class_images

    cfg = compose("train", model_overrides(args), args.work / "classes")
    family = check_inputs(cfg).family
    start = time.perf_counter()
    images = prepare_class_images(cfg, family)
    return {"seconds": time.perf_counter() - start, "count": len(images)}


def child_steps(args, row: dict) -> dict:
    """row: {"model": a model config or null (the check's), "overrides": [...]}."""
    import lightning as L
    import torch

    from break_a_scene.config import compose
    from break_a_scene.training import build_run

    cuda = args.device == "cuda"

    class StepTimer(L.Callback):
        """Times each step (waiting for the GPU), and the peak memory of each phase."""

        def __init__(self):
            self.times: dict[int, list[float]] = {1: [], 2: []}
            self.peaks: dict[int, float] = {}
            self.phase = None

        def _close_phase(self):
            if cuda and self.phase is not None:
                self.peaks[self.phase] = torch.cuda.max_memory_allocated() / 2**30

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if module.phase != self.phase:
                self._close_phase()
                self.phase = module.phase
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if cuda:
                torch.cuda.synchronize()
            self.times[module.phase].append(time.perf_counter() - self.start)

        def on_train_end(self, trainer, module):
            self._close_phase()

    steps = args.warmup + args.steps
    cfg = compose("train", [
        *model_overrides(args, row["model"]), *QUIET, f"method.phase1_steps={steps}", f"method.phase2_steps={steps}",
        "callbacks.export=null", "callbacks.samples=null", "callbacks.attention_maps=null", "callbacks.scene=null",
        *row["overrides"],
    ], args.work / "steps")
    trainer, module, datamodule = build_run(cfg)
    timer = StepTimer()
    trainer.callbacks.append(timer)
    trainer.fit(module, datamodule=datamodule)
    return {
        str(phase): {
            "steps_per_s": len(times[args.warmup:]) / sum(times[args.warmup:]),
            "peak_gib": timer.peaks.get(phase),
        }
        for phase, times in timer.times.items()
    }


def child_generate(args, pipeline: str) -> dict:
    from break_a_scene.export import read_manifest
    from break_a_scene.generate import export_family, load_trained_pipeline
    from break_a_scene.precision import set_tf32
    from break_a_scene.sampling import sample_images

    set_tf32(True)
    start = time.perf_counter()
    pipe = load_trained_pipeline(pipeline, args.device, "float16" if args.device == "cuda" else "float32")
    loaded = time.perf_counter() - start
    manifest = read_manifest(pipeline)
    tokens = manifest["tokens"]
    prompts = [f"a photo of {token} at the beach" for token in tokens] + ["a photo of " + " and ".join(tokens)]
    jobs = [p for p in prompts for _ in range(args.images // len(prompts) or 1)]
    family = export_family(pipeline)
    list(sample_images(pipe, jobs[:1], [0], manifest["resolution"], args.inference_steps, 7.5, 1, tokens,
                       progress=False, family=family))  # warm-up
    start = time.perf_counter()
    samples = list(sample_images(pipe, jobs, list(range(len(jobs))), manifest["resolution"], args.inference_steps,
                                 7.5, args.generation_batch, tokens, progress=False, family=family))
    seconds = time.perf_counter() - start
    return {"images": len(samples), "images_per_s": len(samples) / seconds, "load_s": loaded}


CHILDREN = {"classes": child_classes, "steps": child_steps, "generate": child_generate}


# ---- the parent --------------------------------------------------------------------------------------------------
def run_child(args, kind: str, payload) -> dict:
    """One measurement in its own process (so each CUDA peak is its own); on the CPU, where no peak is read,
    in this process."""
    if args.device == "cpu":
        return CHILDREN[kind](args, payload)
    command = [sys.executable, __file__, *args.passthrough, "--work", str(args.work), "--child", kind,
               json.dumps(payload)]
    return child_process.run(command, f"gpu_check: the {kind} run {payload}", child_env())


def child_env() -> dict:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}


def end_to_end(args) -> dict:
    """`bas-train experiment=official` as a user runs it (class images already cached): the command's wall time
    and the training loop's, from the run's own log."""
    run_dir = args.work / "official"
    steps = [] if args.device == "cuda" else [
        "method.phase1_steps=2", "method.phase2_steps=2", "callbacks.samples.num_inference_steps=2"]
    command = [sys.executable, "-m", "break_a_scene.cli.train", *model_overrides(args), *steps, "logger=none",
               "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}", "overwrite=true"]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=child_env())
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout[-2000:] + done.stderr[-4000:], file=sys.stderr)
        raise SystemExit("gpu_check: bas-train experiment=official failed (output above)")
    log = (run_dir / "train.log").read_text()
    loop = re.search(r"training loop ([\d.]+) s: phase 1 ([\d.]+) s .*, phase 2 ([\d.]+) s", log)
    return {"wall_s": wall, "loop_s": float(loop[1]), "phase1_s": float(loop[2]), "phase2_s": float(loop[3]),
            "steps": "400 + 400" if not steps else "2 + 2", "pipeline": str(run_dir / "pipeline")}


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--compile", action="store_true", help="add the compiled-UNet row (compiling takes minutes)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.model = "sd21_base_arch" if cuda else "tiny"
    args.class_images, args.warmup, args.steps = (100, 3, 8) if cuda else (2, 1, 1)
    args.images, args.inference_steps, args.generation_batch = (16, 50, 8) if cuda else (4, 5, 2)
    args.passthrough = ["--device", args.device]
    if args.child:
        kind, payload = args.child[0], json.loads(args.child[1])
        child_process.report(CHILDREN[kind](args, payload))
        return
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device here; run it on a GPU machine, or with --device cpu")
    args.work = args.work or Path(tempfile.mkdtemp(prefix="bas-gpu-check-"))
    began = time.perf_counter()
    rows = [(label, None, o) for label, o in ROWS if cuda or "trainer.precision=16-mixed" not in o]  # fp16: CUDA only
    rows += [(COMPILED[0], None, COMPILED[1])] if args.compile else []
    rows += [(label, "sdxl_arch" if cuda else "tiny_sdxl", o) for label, o in SDXL_ROWS]
    rows += [(label, f"{family}_arch" if cuda else f"tiny_{family}", [*o, "data.prior_preservation.enabled=false"])
             for label, family, o in MMDIT_ROWS]

    classes = run_child(args, "classes", None)
    print(f"class images cached: {classes['count']} in {classes['seconds']:.1f} s", file=sys.stderr)
    e2e = end_to_end(args)
    print(f"experiment=official: {e2e['wall_s']:.1f} s", file=sys.stderr)
    generation = run_child(args, "generate", e2e["pipeline"])
    results, skipped = [], []
    eight_bit = importlib.util.find_spec("bitsandbytes") is not None
    for label, model, overrides in rows:
        if not eight_bit and any(o in overrides for o in ("memory=16gb", "memory=12gb", "memory=qlora_nf4")):
            skipped.append(f"{label}: skipped, it needs bitsandbytes (pip install bitsandbytes)")
            continue
        try:  # one row running out of memory or failing does not lose the others
            results.append((label, run_child(args, "steps", {"model": model, "overrides": overrides})))
        except child_process.ChildFailed as failure:
            print(failure, file=sys.stderr)
            skipped.append(f"{label}: failed ({str(failure).strip().splitlines()[-1][:160]})")
        print(f"done: {label}", file=sys.stderr)

    resolution = 512 if cuda else 64
    print(f"\n{device_name(args.device)}, {args.model} ({'random weights' if cuda else 'tiny'}), {resolution} px, "
          f"experiment=official (prior preservation: batch of 2), {time.strftime('%Y-%m-%d')}; "
          f"timed steps per phase: {args.steps}, after {args.warmup} warm-up\n")
    print("| run | phase 1 steps/s | phase 1 peak GiB | phase 2 steps/s | phase 2 peak GiB |")
    print("|---|---|---|---|---|")
    for label, result in results:
        cells = []
        for phase in ("1", "2"):
            peak = result[phase]["peak_gib"]
            cells += [f"{result[phase]['steps_per_s']:.2f}", f"{peak:.2f}" if peak is not None else "n/a"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    for line in skipped:
        print(f"| {line} | | | | |")
    by_label = dict(results)
    for precision in ("32-true + TF32", "16-mixed"):
        ours, released = by_label.get(f"full, {precision}, ours"), by_label.get(f"full, {precision}, released capture")
        if ours and released:
            speed = [ours[p]["steps_per_s"] / released[p]["steps_per_s"] for p in ("1", "2")]
            print(f"| ours / released capture, {precision} | {speed[0]:.2f}x | | {speed[1]:.2f}x | |")
    print(f"| class images ({classes['count']}, cached beforehand) | {classes['seconds']:.1f} s | | | |")
    print(f"| `bas-train experiment=official` ({e2e['steps']} steps) | {e2e['wall_s']:.1f} s wall | "
          f"loop {e2e['loop_s']:.1f} s | phase 1 {e2e['phase1_s']:.1f} s | phase 2 {e2e['phase2_s']:.1f} s |")
    print(f"| generation ({generation['images']} images, {args.inference_steps} DDIM steps, guidance 7.5, "
          f"attention saved, batch {args.generation_batch}) | {generation['images_per_s']:.2f} images/s | "
          f"load {generation['load_s']:.1f} s | | |")
    print(f"\ngpu_check took {time.perf_counter() - began:.0f} s; scratch folder {args.work}", file=sys.stderr)


if __name__ == "__main__":
    main()
