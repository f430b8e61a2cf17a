"""The method's losses as plain functions of tensors (method.md, "Losses").

Shapes: B batch, C latent channels, h x w latent side, K tokens sampled (padded to the batch maximum),
r x r the attention loss resolution.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

MaskNormalization = Literal["none", "area"]
MaskDownsampling = Literal["nearest", "max"]


def resize_masks(masks: torch.Tensor, size: int, mode: MaskDownsampling = "nearest") -> torch.Tensor:
    """(..., H, W) -> (..., size, size). "nearest" is the released code's; it can drop thin parts of an object
    (a ring's outline keeps 2 of its cells at 8x8). "max" max-pools: a cell is in the mask when any of its
    pixels is, so thin and small objects survive downsampling."""
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    if mode == "max":
        small = F.adaptive_max_pool2d(flat, (size, size))
    elif mode == "nearest":
        small = F.interpolate(flat, size=(size, size), mode="nearest")
    else:
        raise ValueError(f"mask downsampling must be 'nearest' or 'max', not {mode!r}")
    return small.reshape(*lead, size, size)


def _masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalization: MaskNormalization,
                dims: tuple[int, ...]) -> torch.Tensor:
    """((pred - target) * mask)^2 averaged over `dims`: over every element ("none") or over the masked ones
    ("area"); `mask` broadcasts over the channels."""
    squared = ((pred.float() - target.float()) * mask) ** 2
    if normalization == "none":
        return squared.mean(dim=dims)
    if normalization == "area":
        return squared.sum(dim=dims) / mask.float().expand_as(squared).sum(dim=dims).clamp(min=1.0)
    raise ValueError(f"unknown mask normalization {normalization!r}; use 'none' or 'area'")


def masked_diffusion_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalization: MaskNormalization = "none"
) -> torch.Tensor:
    """MSE on the masked region of the latent prediction.

    pred, target: (B, C, h, w); mask: (B, 1, h, w), the union of the sampled masks at latent size.
    "none" (released code): mean over all B*C*h*w elements of ((pred - target) * mask)^2, so a small
    concept contributes little. "area" (Custom-Diffusion style): the same sum divided by C times the
    mask's area, i.e. the mean over masked elements only.
    """
    return _masked_mse(pred, target, mask, normalization, dims=(0, 1, 2, 3))


def concept_losses(
    pred: torch.Tensor, target: torch.Tensor, masks: torch.Tensor, normalization: MaskNormalization = "none"
) -> torch.Tensor:
    """`masked_diffusion_loss` of each sampled concept alone, on its own mask: pred, target (B, C, h, w), masks
    (B, K, h, w) -> (B, K); 0 for padding (an empty mask)."""
    return _masked_mse(pred.unsqueeze(1), target.unsqueeze(1), masks.unsqueeze(2), normalization, dims=(2, 3, 4))


def hardest_and_others(losses: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Beyond the paper (MagicTailor's sample-wise min-max, per sample here): of each sample's valid concepts,
    the one whose loss is largest, and the rest. losses (B, K), valid (B, K) bool -> two (B, K) bool masks."""
    hardest = F.one_hot(losses.detach().masked_fill(~valid, float("-inf")).argmax(dim=1), losses.shape[1]).bool()
    return hardest & valid, valid & ~hardest


def momentum_losses(
    pred: torch.Tensor, target: torch.Tensor, teacher_pred: torch.Tensor, masks: torch.Tensor, valid: torch.Tensor,
    normalization: MaskNormalization = "none",
) -> tuple[torch.Tensor, torch.Tensor]:
    """MagicTailor's dual-stream balancing on a Break-A-Scene batch: (the hardest concept's masked loss, averaged
    over the batch; the preservation loss, the masked MSE between the prediction and the EMA teacher's on each
    other sampled concept, averaged over those concepts, 0 when every sample holds one concept).
    pred, target, teacher_pred (B, C, h, w); masks (B, K, h, w); valid (B, K) bool."""
    losses = concept_losses(pred, target, masks, normalization)
    hardest, others = hardest_and_others(losses, valid)
    preserve = concept_losses(pred, teacher_pred, masks, normalization)
    loss_hardest = (losses * hardest).sum(dim=1).mean()
    loss_preserve = (preserve * others).sum() / others.sum().clamp(min=1)
    return loss_hardest, loss_preserve


def normalize_by_max(maps: torch.Tensor) -> torch.Tensor:
    """Divide each (r, r) map of (..., r, r) by its maximum, as the released code does."""
    peak = maps.flatten(-2).amax(dim=-1).clamp(min=torch.finfo(maps.dtype).tiny)
    return maps / peak[..., None, None]


def attention_iou(attention: torch.Tensor, target_masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU between each max-normalised map above `threshold` and its mask above 0.5: (B, K, r, r) -> (B, K)."""
    predicted = normalize_by_max(attention.float()) > threshold
    truth = target_masks > 0.5
    union = (predicted | truth).flatten(2).sum(dim=2)
    return (predicted & truth).flatten(2).sum(dim=2) / union.clamp(min=1)


def cross_attention_loss(
    attention: torch.Tensor, target_masks: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Pull each sampled token's cross-attention map toward its mask.

    attention: (B, K, r, r) token maps averaged over layers and heads; target_masks: (B, K, r, r) masks
    downsampled to r; valid: (B, K) bool, False for padding. Each map is divided by its maximum (released
    code), the per-token loss is the mean squared error over r*r, summed over a sample's tokens and
    averaged over the batch.
    """
    normalized = normalize_by_max(attention.float())
    per_token = ((normalized - target_masks.float()) ** 2).mean(dim=(2, 3))  # (B, K)
    return (per_token * valid.float()).sum(dim=1).mean()


def token_contrastive_loss(rows: torch.Tensor, anchors: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Beyond the paper (ConceptExpress's token-level contrastive loss, on the rows themselves): each token's
    row is pulled to its own anchor (its initial row) and pushed from the other tokens' rows, an InfoNCE over
    cosine similarities. rows, anchors: (N, d), N >= 2. Returns the mean over tokens of
    -log(exp(cos(r_i, a_i) / T) / (exp(cos(r_i, a_i) / T) + sum_{j != i} exp(cos(r_i, r_j) / T)))."""
    unit, anchor = F.normalize(rows.float(), dim=-1), F.normalize(anchors.float(), dim=-1)
    positive = (unit * anchor).sum(-1, keepdim=True)  # (N, 1)
    others = unit @ unit.T  # (N, N); the diagonal (a row with itself) is left out below
    eye = torch.eye(len(rows), dtype=torch.bool, device=rows.device)
    logits = torch.cat([positive, others.masked_fill(eye, float("-inf"))], dim=1) / temperature
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def prior_preservation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Plain MSE on the class-image half of the batch: (B, C, h, w) each."""
    return F.mse_loss(pred.float(), target.float())
