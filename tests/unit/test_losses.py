import math

import pytest
import torch

from break_a_scene.losses import (
    concept_losses,
    cross_attention_loss,
    hardest_and_others,
    masked_diffusion_loss,
    momentum_losses,
    prior_preservation_loss,
    resize_masks,
    token_contrastive_loss,
)


def test_masked_loss_released_normalisation_divides_by_all_elements():
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.zeros(1, 2, 2, 2)
    pred[0, :, 0, 0] = 2.0  # error 2 in both channels at the one masked pixel
    pred[0, :, 1, 1] = 5.0  # error outside the mask is ignored
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # ((2*1)^2 * 2 channels) / (1*2*2*2 elements) = 8 / 8
    assert masked_diffusion_loss(pred, target, mask, "none").item() == 1.0
    # area: 8 / (2 channels * 1 masked pixel) = 4
    assert masked_diffusion_loss(pred, target, mask, "area").item() == 4.0


def test_masked_loss_with_full_mask_is_plain_mse():
    pred, target = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    full = torch.ones(2, 1, 3, 3)
    torch.testing.assert_close(masked_diffusion_loss(pred, target, full), torch.nn.functional.mse_loss(pred, target))


def test_masked_loss_soft_mask_weights_the_error():
    pred, target = torch.full((1, 1, 1, 2), 1.0), torch.zeros(1, 1, 1, 2)
    mask = torch.tensor([[[[0.5, 1.0]]]])
    # ((0.5)^2 + 1^2) / 2
    assert masked_diffusion_loss(pred, target, mask).item() == 0.625


def test_attention_loss_hand_computed():
    attention = torch.tensor([[[[0.2, 0.4], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]]]])  # (B=1, K=2, 2, 2)
    masks = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]]])
    valid = torch.tensor([[True, True]])
    # token 0: /max -> [.5, 1, 0, 0], errors [.25, 0, 0, 0] -> mean 0.0625
    # token 1: /max -> all ones, errors [0, 1, 1, 1] -> mean 0.75; sum over tokens = 0.8125
    assert cross_attention_loss(attention, masks, valid).item() == 0.8125


def test_attention_loss_ignores_padding_and_averages_over_batch():
    attention = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]]).expand(2, 2, 1, 2).clone()
    masks = torch.tensor([[0.0, 1.0]]).expand(2, 2, 1, 2).clone()  # every token: error 1 at both pixels
    valid = torch.tensor([[True, False], [True, True]])
    # sample 0: 1 token * 1.0; sample 1: 2 tokens * 1.0; mean over batch = 1.5
    assert cross_attention_loss(attention, masks, valid).item() == 1.5


def test_prior_loss_is_plain_mse():
    assert prior_preservation_loss(torch.ones(1, 1, 2, 2) * 3, torch.ones(1, 1, 2, 2)).item() == 4.0


def test_resize_masks_is_nearest():
    mask = torch.zeros(1, 4, 4)
    mask[0, 0, 0] = 1.0  # nearest to 2x2 keeps source pixel (0,0), (0,2), (2,0), (2,2)
    mask[0, 1, 1] = 1.0  # dropped by nearest sampling
    out = resize_masks(mask, 2)
    assert out.shape == (1, 2, 2)
    assert out.tolist() == [[[1.0, 0.0], [0.0, 0.0]]]


def test_max_downsampling_keeps_what_nearest_drops():
    mask = torch.zeros(1, 32, 32)
    mask[0, 5, 9] = 1.0  # nearest samples pixels (4i, 4j): (4, 8) is empty
    assert resize_masks(mask, 8).sum() == 0
    pooled = resize_masks(mask, 8, mode="max")
    assert pooled.sum() == 1 and pooled[0, 1, 2] == 1
    with pytest.raises(ValueError, match="'nearest' or 'max'"):
        resize_masks(mask, 8, mode="area")


def test_token_contrastive_loss_by_hand():
    apart = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # each row at its anchor (cos 1) and orthogonal to the other (cos 0): log(1 + e^-10) at T = 0.1
    assert torch.isclose(token_contrastive_loss(apart, apart, 0.1), torch.tensor(math.log1p(math.exp(-10))), atol=2e-6)
    together = torch.tensor([[1.0, 0.0], [2.0, 0.0]])  # the rows agree (cos 1), each is orthogonal to its anchor
    anchors = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    assert torch.isclose(token_contrastive_loss(together, anchors, 0.1), torch.tensor(math.log1p(math.exp(10))))
    three = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cos(r0, r2) = cos(r1, r2) = 1/sqrt(2)
    c = 1 / math.sqrt(2)
    expected = [math.log(1 + math.exp(-1 / 0.5) + math.exp((c - 1) / 0.5))] * 2 + \
               [math.log(1 + 2 * math.exp((c - 1) / 0.5))]
    assert torch.isclose(token_contrastive_loss(three, three, 0.5), torch.tensor(sum(expected) / 3), atol=1e-6)


def test_token_contrastive_loss_pushes_the_rows_apart():
    rows = torch.tensor([[1.0, 0.2], [1.0, -0.2]], requires_grad=True)
    token_contrastive_loss(rows, rows.detach(), 0.1).backward()
    assert rows.grad[0, 1] < 0 and rows.grad[1, 1] > 0  # descent raises row 0's y and lowers row 1's


def _two_concepts():
    """Sample 0 holds concepts A (pixel (0, 0), error 2) and B (pixel (1, 1), error 1) and a padded slot; sample 1
    holds one concept (pixel (0, 1), error 3). Target 0, 2 channels, 2 x 2 latents."""
    pred, target = torch.zeros(2, 2, 2, 2), torch.zeros(2, 2, 2, 2)
    masks = torch.zeros(2, 3, 2, 2)
    pred[0, :, 0, 0], masks[0, 0, 0, 0] = 2.0, 1.0
    pred[0, :, 1, 1], masks[0, 1, 1, 1] = 1.0, 1.0
    pred[1, :, 0, 1], masks[1, 0, 0, 1] = 3.0, 1.0
    valid = torch.tensor([[True, True, False], [True, False, False]])
    return pred, target, masks, valid


def test_concept_losses_by_hand():
    pred, target, masks, _ = _two_concepts()
    # none: (error^2 x 2 channels) / 8 elements; area: the same sum / (2 channels x 1 pixel); padding 0
    assert concept_losses(pred, target, masks, "none").tolist() == [[1.0, 0.25, 0.0], [2.25, 0.0, 0.0]]
    assert concept_losses(pred, target, masks, "area").tolist() == [[4.0, 1.0, 0.0], [9.0, 0.0, 0.0]]


def test_hardest_concept_is_chosen_among_the_valid_ones():
    losses = torch.tensor([[1.0, 0.25, 0.0], [0.0, 0.0, 0.0]])
    hardest, others = hardest_and_others(losses, torch.tensor([[True, True, False], [False, True, False]]))
    assert hardest.tolist() == [[True, False, False], [False, True, False]]  # padding never wins, even at a tie
    assert others.tolist() == [[False, True, False], [False, False, False]]


def test_momentum_losses_by_hand():
    pred, target, masks, valid = _two_concepts()
    pred.requires_grad_(True)
    teacher = pred.detach().clone()
    teacher[0, :, 1, 1] = 0.0  # the teacher differs from the prediction on B's pixel only
    hardest, preserve = momentum_losses(pred, target, teacher, masks, valid, "none")
    assert hardest.item() == (1.0 + 2.25) / 2  # A in sample 0, the one concept in sample 1
    assert preserve.item() == 0.25  # B's masked MSE to the teacher, the only other concept in the batch
    hardest.backward()
    assert pred.grad[0, :, 1, 1].abs().sum() == 0  # B is not pushed toward its target by the hardest term
    assert pred.grad[0, :, 0, 0].abs().sum() > 0
