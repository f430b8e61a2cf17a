"""experiments/memory_budget.py: the arithmetic by hand on small modules, and docs/speed.md's MM-DiT claims from
the real architectures built on the meta device (nothing allocated)."""

import importlib.util
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("memory_budget", REPO / "experiments" / "memory_budget.py")
memory_budget = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory_budget)


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.to_q = torch.nn.Linear(64, 32)  # 2048 weights + 32 bias
        self.norm = torch.nn.LayerNorm(32)  # 64


def test_lora_and_frozen_bytes_by_hand():
    block = Block()
    assert memory_budget.lora_parameters(block, ["to_q", "to_k"], rank=4) == 4 * (64 + 32)
    assert memory_budget.frozen_bytes(block, 2, None) == (2048 + 32 + 64) * 2
    assert memory_budget.frozen_bytes(block, 2, "nf4") == pytest.approx(2048 * (0.5 + 4 / 64) + (32 + 64) * 2)


def test_flux_fits_24_gib_only_quantized():
    """FLUX.1-dev's 16.75 B parameters: in bf16 they alone pass 24 GiB (31 GiB); NF4 brings the frozen base to
    about 9 GiB; rank-32 adapters on the double blocks' to_q/k/v/out and the single blocks' to_q/k/v (37.4 M
    parameters) cost 16 bytes each."""
    bf16 = memory_budget.compose_budget("flux_arch", ["memory=lora_bf16"])
    nf4 = memory_budget.compose_budget("flux_arch", ["memory=qlora_nf4"])
    assert 30 < bf16["frozen"] < 32 and 8 < nf4["frozen"] < 10
    adapters = 19 * 4 * 32 * (3072 + 3072) + 38 * 3 * 32 * (3072 + 3072)
    assert bf16["trained"] == pytest.approx(adapters * 16 / 2**30, rel=1e-6)
