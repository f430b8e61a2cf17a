"""The EMA teacher (beyond the paper: MagicTailor's momentum denoiser, `method.lambda_ema_teacher`).

A frozen copy of the denoiser made when phase 2 starts, moved toward the trained one after every optimizer step
(teacher <- decay * teacher + (1 - decay) * online). Its predictions hold the concepts a step does not push on
where they were (`losses.momentum_losses`). It is a plain object, not a registered module: Lightning, DDP and
the optimizer never see it, and checkpoints carry only the weights that move (`state_dict`).
"""

from __future__ import annotations

import copy

import torch


def check_decay(decay: float) -> None:
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"method.ema_decay={decay} must be in [0, 1): the teacher's share at each step")


class EmaTeacher:
    def __init__(self, denoiser: torch.nn.Module, decay: float):
        check_decay(decay)
        self.decay = decay
        self.model = copy.deepcopy(denoiser).requires_grad_(False).eval()

    def _moving_pairs(self, denoiser: torch.nn.Module) -> list[tuple[str, torch.Tensor, torch.nn.Parameter]]:
        """(name, teacher weight, online weight) of the weights the online denoiser trains."""
        teacher = dict(self.model.named_parameters())
        return [(name, teacher[name], param) for name, param in denoiser.named_parameters() if param.requires_grad]

    @torch.no_grad()
    def update(self, denoiser: torch.nn.Module) -> None:
        pairs = self._moving_pairs(denoiser)
        if pairs:
            torch._foreach_lerp_([t for _, t, _ in pairs], [p.to(t.dtype) for _, t, p in pairs], 1.0 - self.decay)

    def state_dict(self, denoiser: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The teacher's values of the weights that train (the rest equal the loaded denoiser's)."""
        return {name: teacher.detach().clone() for name, teacher, _ in self._moving_pairs(denoiser)}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        teacher = dict(self.model.named_parameters())
        unknown = sorted(set(state) - set(teacher))
        if unknown:
            raise ValueError(f"the checkpoint's EMA teacher has weights this denoiser lacks: {unknown[:3]}")
        for name, value in state.items():
            teacher[name].copy_(value)

    def to(self, device: torch.device) -> EmaTeacher:
        self.model.to(device)
        return self
