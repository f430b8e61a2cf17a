"""Where a toy trial's training time goes, and whether a faster kernel exists for it on this CPU.

The toy trial (`experiment=toyworld`) spends most of its time in the 500 training steps. This prints, from the
real run built from the Hydra configs: each phase's step split into forward (the LightningModule's
`training_step`), backward and optimizer step, timed outside Lightning; then every convolution and attention
call of one toy UNet forward (shapes recorded by hooks), each timed on the path PyTorch takes and on the
alternatives it could take (oneDNN's convolution, bfloat16, the math attention), with the achieved GFLOP/s.
If the default path is already the fastest, a faster trial at equal results has to do less work.

    python experiments/bench_toy_kernels.py            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

ROOT = Path(__file__).resolve().parents[1]


def median_us(call, repeats: int) -> float:
    for _ in range(5):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times)


def build(phase: int, steps: int):
    from break_a_scene.config import compose
    from break_a_scene.training import build_run

    phases = [f"method.phase1_steps={steps}", "method.phase2_steps=0"] if phase == 1 else \
        ["method.phase1_steps=0", f"method.phase2_steps={steps}"]
    cfg = compose("train", ["experiment=toyworld", *phases, "logger=none", "callbacks.export=null"],
                  Path(os.environ.get("TMPDIR", "/tmp")) / "bas-bench-kernels" / "run")
    _, module, datamodule = build_run(cfg)
    datamodule.setup("fit")
    return module, datamodule


def step_split(phase: int, steps: int) -> dict[str, float]:
    """Median ms of the forward, backward and optimizer step of `steps` real batches (5 warm-up)."""
    module, datamodule = build(phase, steps + 5)
    batches = [batch for _, batch in zip(range(steps + 5), datamodule.train_dataloader())]
    optimizer = module.configure_optimizers()
    module._log_step = lambda *args: None  # Lightning's logging needs a trainer; it is not the step's math
    if module.capture is not None:
        module.capture.install()
    split: dict[str, list[float]] = {"forward": [], "backward": [], "optimizer": []}
    for index, batch in enumerate(batches):
        start = time.perf_counter()
        loss = module.training_step(batch, index)["loss"]
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = time.perf_counter()
        if index >= 5:
            split["forward"].append(forward - start)
            split["backward"].append(backward - forward)
            split["optimizer"].append(done - backward)
    return {name: 1e3 * statistics.median(values) for name, values in split.items()}


def unet_calls() -> tuple[Counter, Counter]:
    """The (input shape, weight shape, padding, stride) of every convolution and the (q, k) shapes of every
    attention call in one forward of the toy UNet at the toy trial's batch and latent size."""
    module, datamodule = build(1, 1)
    batch = next(iter(datamodule.train_dataloader()))
    family = module.family
    convs: Counter = Counter()
    attention: Counter = Counter()
    hooks = [layer.register_forward_pre_hook(
        lambda layer, args: convs.update([(tuple(args[0].shape), tuple(layer.weight.shape), layer.padding,
                                           layer.stride)]))
        for layer in family.denoiser.modules() if isinstance(layer, torch.nn.Conv2d)]
    plain = F.scaled_dot_product_attention

    def recording(query, key, *args, **kwargs):
        attention.update([(tuple(query.shape), tuple(key.shape))])
        return plain(query, key, *args, **kwargs)

    with torch.no_grad():
        latents = torch.randn(1, family.denoiser.config.in_channels, 16, 16)
        noisy, timesteps, _ = family.training_inputs(latents, torch.Generator().manual_seed(0))
        conditioning = family.encode_prompt(batch["input_ids"], 32)
    F.scaled_dot_product_attention = recording
    try:
        with torch.no_grad():
            family.denoise(noisy, timesteps, conditioning)
    finally:
        F.scaled_dot_product_attention = plain
        for hook in hooks:
            hook.remove()
    return convs, attention


def conv_rows(convs: Counter, repeats: int) -> list[str]:
    """A row per convolution shape, and a last row: the forward's convolutions on the default path, and on the
    fastest path for each shape."""
    rows, total, fastest = [], 0.0, 0.0
    for (shape, weight_shape, padding, stride), count in sorted(convs.items(), key=lambda item: -item[1]):
        x, w, b = torch.randn(shape), torch.randn(weight_shape), torch.randn(weight_shape[0])
        out_side = (shape[-1] + 2 * padding[0] - weight_shape[-1]) // stride[0] + 1
        flops = 2 * weight_shape[0] * weight_shape[1] * weight_shape[2] * weight_shape[3] * out_side ** 2
        default = median_us(lambda: F.conv2d(x, w, b, stride, padding), repeats)
        onednn = median_us(lambda: torch.ops.aten.mkldnn_convolution(x, w, b, padding, stride, [1, 1], 1), repeats)
        xb, wb, bb = x.bfloat16(), w.bfloat16(), b.bfloat16()
        bf16 = median_us(lambda: F.conv2d(xb, wb, bb, stride, padding), repeats)
        rows.append(f"| conv {list(shape)} x {list(weight_shape)} | {count} | {default:.0f} "
                    f"({flops / default / 1e3:.0f}) | {onednn:.0f} | {bf16:.0f} |")
        total += count * default
        fastest += count * min(default, onednn, bf16)
    rows.append(f"| all convolutions of the forward | {sum(convs.values())} | {total:.0f} | fastest path per "
                f"shape: {fastest:.0f} | |")
    return rows


def attention_rows(attention: Counter, repeats: int) -> list[str]:
    rows = []
    for (q_shape, k_shape), count in sorted(attention.items(), key=lambda item: -item[1]):
        q = torch.randn(q_shape, requires_grad=True)
        k, v = torch.randn(k_shape, requires_grad=True), torch.randn(k_shape, requires_grad=True)

        def forward_backward():
            F.scaled_dot_product_attention(q, k, v).sum().backward()

        default = median_us(forward_backward, repeats)
        with sdpa_kernel(SDPBackend.MATH):
            math = median_us(forward_backward, repeats)
        rows.append(f"| attention q {list(q_shape)} k {list(k_shape)} (forward + backward) | {count} | "
                    f"{default:.0f} | math: {math:.0f} | |")
    return rows


def import_seconds() -> float:
    """A fresh interpreter's imports of what bas-evaluate runs (the trial's start-up before any work)."""
    code = "import break_a_scene.cli.evaluate, break_a_scene.training, break_a_scene.evaluation.runner"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps a phase")
    parser.add_argument("--repeats", type=int, default=200, help="timed calls a kernel")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; imports of bas-evaluate "
          f"{import_seconds():.1f} s\n")
    print("| phase | forward ms | backward ms | optimizer ms |\n|---|---|---|---|")
    for phase in (1, 2):
        split = step_split(phase, args.steps)
        print(f"| {phase} | {split['forward']:.1f} | {split['backward']:.1f} | {split['optimizer']:.1f} |")
    convs, attention = unet_calls()
    print("\none toy UNet forward at batch 1; us a call (GFLOP/s) on the path PyTorch takes, and the alternatives")
    print("| call | calls | default us | oneDNN us | bfloat16 us |\n|---|---|---|---|---|")
    for row in conv_rows(convs, args.repeats) + attention_rows(attention, args.repeats):
        print(row)


if __name__ == "__main__":
    main()
