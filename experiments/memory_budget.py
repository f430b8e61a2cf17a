"""The GPU memory a run's weights, gradients and optimizer state take, computed from the model's parameter
counts (the architecture built on the meta device: nothing is allocated) and the run's settings: what each
phase-2 setting trains, what the frozen weights are held in, the optimizer's bytes per parameter. Activations
come on top (the GPU check measures whole peaks).

    python experiments/memory_budget.py                       # the MM-DiTs' table (README, "Speed and memory")
    python experiments/memory_budget.py --model sd3_arch --overrides memory=12gb
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

GIB = 2**30
ROWS = [  # (model, label, overrides)
    ("flux_arch", "FLUX.1-dev, memory=lora_bf16", ["memory=lora_bf16"]),
    ("flux_arch", "FLUX.1-dev, memory=qlora_nf4", ["memory=qlora_nf4"]),
    ("sd3_arch", "SD 3.5 Medium, memory=full (float32, every encoder trained)", ["memory=full"]),
    ("sd3_arch", "SD 3.5 Medium, memory=12gb (encoders frozen, bf16, 8-bit AdamW)", ["memory=12gb"]),
    ("sd3_arch", "SD 3.5 Medium, memory=lora_bf16", ["memory=lora_bf16"]),
]
NF4_BYTES = 0.5 + 4 / 64  # 4 bits a weight and a float32 scale per block of 64
INT8_BYTES = 1 + 4 / 4096  # a byte a weight and a float32 scale per row (rows of thousands)


def lora_parameters(module: torch.nn.Module, targets: list[str], rank: int) -> int:
    """The adapters' size: rank x (in + out) for each linear layer whose name ends with a target."""
    return sum(rank * (m.in_features + m.out_features) for name, m in module.named_modules()
               if isinstance(m, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in targets))


def frozen_bytes(module: torch.nn.Module, dtype_bytes: int, quantize: str | None) -> float:
    """A frozen module's weights: its linear weights quantized when asked, everything else in the held dtype."""
    linear = sum(m.weight.numel() for m in module.modules() if type(m) is torch.nn.Linear) if quantize else 0
    other = sum(p.numel() for p in module.parameters()) - linear
    return other * dtype_bytes + linear * (NF4_BYTES if quantize == "nf4" else INT8_BYTES)


def budget(cfg) -> dict[str, float]:
    """GiB of phase 2 (the larger phase) by kind, for a composed train config whose model builds on meta."""
    from hydra.utils import instantiate

    from break_a_scene.precision import autocast_dtype

    family = instantiate(cfg.model.components, device="meta")
    method = cfg.method
    low = autocast_dtype(cfg.trainer.precision) is not None and method.low_precision_frozen
    held = 2 if low else 4
    adam = 2 if cfg.optimizer.get("state_bits", 32) == 8 else 8
    per_trained = 4 + 4 + adam  # float32 weight and gradient, two moments
    encoders = family.named_text_encoders()
    trained = frozen = 0.0
    quantize = method.get("quantize_frozen")
    if method.phase2_trainable == "lora":
        lora = method.lora
        adapters = lora_parameters(family.denoiser, list(lora.target_modules), lora.rank)
        if lora.text_encoders:
            adapters += sum(lora_parameters(e, list(lora.text_encoder_target_modules), lora.rank)
                            for name, e in encoders if name in family.lora_text_encoders)
        trained += adapters * per_trained
        frozen += sum(frozen_bytes(m, held, quantize) for m in [family.denoiser, *(e for _, e in encoders)])
    else:
        trained += sum(p.numel() for p in family.denoiser.parameters()) * per_trained
        for _, encoder in encoders:
            count = sum(p.numel() for p in encoder.parameters())
            if method.freeze_text_encoder:
                frozen += count * held
            else:
                trained += count * per_trained
    frozen += sum(p.numel() for p in family.vae.parameters()) * held
    return {"frozen": frozen / GIB, "trained": trained / GIB, "total": (frozen + trained) / GIB}


def compose_budget(model: str, overrides: list[str]) -> dict[str, float]:
    from break_a_scene.config import compose

    cfg = compose("train", [f"model={model}", *overrides], Path(tempfile.mkdtemp(prefix="bas-budget-")))
    return budget(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="one model config (default: the MM-DiT table)")
    parser.add_argument("--overrides", nargs="*", default=[])
    args = parser.parse_args()
    rows = [(args.model, f"{args.model} {' '.join(args.overrides)}", args.overrides)] if args.model else ROWS
    print("| model, preset (phase 2) | frozen weights GiB | trained: weights + grads + AdamW GiB | total GiB |")
    print("|---|---|---|---|")
    for model, label, overrides in rows:
        b = compose_budget(model, overrides)
        print(f"| {label} | {b['frozen']:.1f} | {b['trained']:.1f} | {b['total']:.1f} |")


if __name__ == "__main__":
    main()
