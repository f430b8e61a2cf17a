"""The loss of one training step as a pure function of the step's tensors: the masked reconstruction (or, with
the EMA teacher, its dual-stream form), prior preservation, the cross-attention loss and the token contrastive
loss, each with its weight from `method` (method.md has every formula)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from break_a_scene.losses import (
    cross_attention_loss,
    masked_diffusion_loss,
    momentum_losses,
    prior_preservation_loss,
    resize_masks,
    token_contrastive_loss,
)
from break_a_scene.settings import MethodSettings


@dataclass
class StepTensors:
    """What the step computed, for the loss. Rows past `instances` are prior-preservation class rows."""

    pred: torch.Tensor  # (B, C, h, w): the denoiser's prediction
    target: torch.Tensor  # (B, C, h, w): what it regresses
    instances: int  # the scene's rows (the first ones)
    masks: torch.Tensor  # (b, K, R, R): each sampled concept's mask in pixels, in prompt order
    union_mask: torch.Tensor  # (b, 1, R, R): where the masked loss looks
    token_valid: torch.Tensor  # (b, K): False where K is padding
    teacher: torch.Tensor | None = None  # (b, C, h, w): the EMA teacher's prediction, with the teacher
    maps: torch.Tensor | None = None  # (b, K, r, r): each token's attention, with the attention loss
    rows: list[torch.Tensor] = field(default_factory=list)  # each text encoder's (N, d) token rows
    anchors: list[torch.Tensor] = field(default_factory=list)  # their initial values, with the contrastive loss


@dataclass
class Losses:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]  # what is logged: loss_masked, loss_prior, loss_attention, ...
    attention_targets: torch.Tensor | None  # (b, K, r, r): the masks the attention loss compared with


class Objective:
    """The method's loss: its terms, their weights and the mask handling, from `method`."""

    def __init__(self, method: MethodSettings):
        self.method = method

    def __call__(self, step: StepTensors) -> Losses:
        method, n = self.method, step.instances
        pred, target = step.pred[:n], step.target[:n]
        latent_side = step.pred.shape[-1]
        terms: dict[str, torch.Tensor] = {}
        if step.teacher is not None:  # the hardest concept's masked loss, the others held by the teacher
            masks = resize_masks(step.masks, latent_side, method.mask_downsampling)
            reconstruction, preserve = momentum_losses(pred, target, step.teacher, masks, step.token_valid,
                                                       method.mask_normalization)
            loss = reconstruction + method.lambda_ema_teacher * preserve
            terms["loss_preserve"] = preserve
        elif method.masked_loss:
            mask = resize_masks(step.union_mask, latent_side, method.mask_downsampling)
            reconstruction = loss = masked_diffusion_loss(pred, target, mask, method.mask_normalization)
        else:
            reconstruction = loss = F.mse_loss(pred.float(), target.float())
        terms["loss_masked"] = reconstruction
        if step.pred.shape[0] > n:
            prior = prior_preservation_loss(step.pred[n:], step.target[n:])
            loss = loss + method.lambda_prior * prior
            terms["loss_prior"] = prior
        attention_targets = None
        if step.maps is not None:
            attention_targets = resize_masks(step.masks, step.maps.shape[-1], method.mask_downsampling)
            attention = cross_attention_loss(step.maps, attention_targets, step.token_valid)
            loss = loss + method.lambda_attention * attention
            terms["loss_attention"] = attention
        if step.anchors and step.rows[0].shape[0] > 1:
            contrastive = sum(token_contrastive_loss(rows, anchors, method.contrastive_temperature)
                              for rows, anchors in zip(step.rows, step.anchors)) / len(step.anchors)
            loss = loss + method.lambda_contrastive * contrastive
            terms["loss_contrastive"] = contrastive
        terms["loss"] = loss
        return Losses(loss, terms, attention_targets)
