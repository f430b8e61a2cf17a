"""What a run shows its callbacks (the framework's visuals, export and timing): the facts that do not change,
the current phase, the device, and the model parts set up for sampling. `BreakASceneModule` provides it, and
callbacks read nothing else of the module (tests/unit/test_structure.py holds them to it)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch

from break_a_scene.families.base import ModelFamily
from break_a_scene.tokens import PlaceholderTokens


@dataclass(frozen=True)
class RunFacts:
    """What does not change during a run and callbacks may read: the tokens, sizes, the phase schedule, and
    what the export's manifest and W&B record about the run (`run_info`)."""

    tokens: PlaceholderTokens
    resolution: int
    attention_resolution_divisor: int
    phase1_steps: int
    phase2_steps: int
    run_info: dict

    @property
    def total_steps(self) -> int:
        return self.phase1_steps + self.phase2_steps

    def phase_at(self, step: int) -> int:
        """The one rule for the phase: 2 from optimizer step `phase1_steps` on."""
        return 1 if step < self.phase1_steps else 2


class CallbackView(Protocol):
    """All that the framework's callbacks may read of the module (tests/unit/test_structure.py holds them to
    it): its facts, the current phase, its device, and the model parts set up for sampling."""

    facts: RunFacts
    phase: int
    device: torch.device

    def inference_family(self) -> AbstractContextManager[ModelFamily]: ...


@dataclass
class AttentionSnapshot:
    """The last training step's token maps, for the visual callbacks (detached, on the step's device)."""

    maps: torch.Tensor  # (B, K, r, r), averaged over layers and heads
    targets: torch.Tensor  # (B, K, r, r), masks at the loss resolution
    token_ids: torch.Tensor  # (B, K), -1 where padded
    pixel_values: torch.Tensor  # (B, 3, R, R) in [-1, 1], flipped as the step saw them
    prompts: list[str]
