"""Which parameters train in each phase, at which learning rates (method.md, "Two phases").

Phase 1 trains the new token rows (phase1_lr); phase 2 the denoiser and the text encoders (phase2_lr) with a
fresh optimizer, or LoRA adapters and the token rows. The paper's baselines are other plans: TI-m trains tokens in
both phases, DB-m everything in both (at phase2_lr), CD-m the cross-attention K/V (always at phase2_lr) with the
token rows (always at phase1_lr).
"""

from __future__ import annotations

from typing import Callable

import torch

from break_a_scene.families.base import ModelFamily
from break_a_scene.lora import add_lora, lora_parameters
from break_a_scene.precision import quantize_linears
from break_a_scene.settings import MethodSettings, Trainable

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class PhasePlan:
    def __init__(self, method: MethodSettings):
        self.method = method

    def phase_at(self, step: int) -> int:
        """The one rule for the phase: 2 from optimizer step `phase1_steps` on."""
        return 1 if step < self.method.phase1_steps else 2

    def trainable(self, phase: int) -> Trainable:
        return self.method.phase1_trainable if phase == 1 else self.method.phase2_trainable

    @staticmethod
    def lora_parameters(family: ModelFamily) -> list[torch.nn.Parameter]:
        return [p for part in (family.denoiser, *family.text_encoders) for p in lora_parameters(part)]

    def frozen_modules(self, family: ModelFamily) -> list[torch.nn.Module]:
        """The denoiser and text encoders whose weights no phase trains (adapters and token rows aside)."""
        frozen = self.method.frozen_parts()
        return ([family.denoiser] if "denoiser" in frozen else []) + \
            (list(family.text_encoders) if "text_encoders" in frozen else [])

    def adapt(self, family: ModelFamily) -> None:
        """Before training: the weights no phase trains quantized (`quantize_frozen`), then LoRA adapters on what a
        `lora` phase trains (they wrap the quantized layers: QLoRA)."""
        if self.method.quantize_frozen:
            for part in self.frozen_modules(family):
                quantize_linears(part, self.method.quantize_frozen)
        if "lora" in (self.method.phase1_trainable, self.method.phase2_trainable):
            add_lora(family, self.method.lora)

    def set_trainable(self, phase: int, family: ModelFamily, token_rows: list[torch.nn.Parameter]) -> None:
        """requires_grad on exactly what `phase` trains."""
        trainable = self.trainable(phase)
        everything = trainable == "all"
        family.denoiser.requires_grad_(everything)
        for encoder in family.text_encoders:
            encoder.requires_grad_(everything and not self.method.freeze_text_encoder)
        if trainable == "cross_attention_kv":
            for param in family.cross_attention_kv():
                param.requires_grad_(True)
        if trainable == "lora":
            for param in self.lora_parameters(family):
                param.requires_grad_(True)
        for rows in token_rows:
            rows.requires_grad_(trainable != "lora" or self.method.lora.train_tokens)

    def optimizer(self, phase: int, family: ModelFamily, token_rows: list[torch.nn.Parameter],
                  factory: OptimizerFactory) -> torch.optim.Optimizer:
        """A fresh optimizer over what `phase` trains, in its groups and learning rates."""
        method, trainable = self.method, self.trainable(phase)
        lr = method.phase1_lr if phase == 1 else method.phase2_lr
        if trainable == "tokens":
            return factory(token_rows, lr=lr)
        if trainable == "cross_attention_kv":
            groups = [{"params": token_rows, "lr": method.phase1_lr},
                      {"params": family.cross_attention_kv(), "lr": method.phase2_lr}]
            return factory(groups, lr=lr)
        if trainable == "lora":  # the adapters at their lr, the token rows at phase2_lr as in a full phase 2
            groups = [{"params": self.lora_parameters(family), "lr": method.lora.lr}]
            if method.lora.train_tokens:
                groups.append({"params": token_rows, "lr": method.phase2_lr})
            return factory(groups, lr=lr)
        encoders = [p for encoder in family.text_encoders for p in encoder.parameters()]
        return factory([p for p in (*family.denoiser.parameters(), *encoders) if p.requires_grad], lr=lr)
