"""The attention hooks and the cross-attention loss, optimised alone, move a token's attention onto its mask."""

import torch

from break_a_scene.attention import AttentionCapture, token_positions
from break_a_scene.families.stable_diffusion import loss_layer_names
from break_a_scene.losses import cross_attention_loss, resize_masks
from break_a_scene.scene import load_scene, prepare_scene
from break_a_scene.tokens import add_placeholder_tokens, tokenize
from tests.conftest import tiny_components


def _setup(scene_dir, gradient_checkpointing=False):
    torch.manual_seed(0)
    parts = tiny_components()
    tokens = add_placeholder_tokens(parts.tokenizer, parts.text_encoder, ["<asset0>", "<asset1>"], ["box", "box"])
    scene = prepare_scene(load_scene(folder=str(scene_dir)), 64)
    if gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
    parts.unet.train()
    capture = AttentionCapture(parts.unet, loss_layer_names(parts.unet, 32, 8)).install()
    input_ids = tokenize(parts.tokenizer, ["a photo of <asset0>"])
    positions = token_positions(input_ids, torch.tensor([[tokens.ids[0]]]))
    target = resize_masks(scene.masks[:1], 8)[None]  # (1, 1, 8, 8)
    latents = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    return parts, capture, input_ids, positions, target, latents


def _attention_loss(parts, capture, input_ids, positions, target, latents):
    text = parts.text_encoder(input_ids)[0]
    parts.unet(latents, torch.tensor([500]), text)
    maps = capture.token_maps(positions)
    return cross_attention_loss(maps, target, torch.tensor([[True]])), maps


def _iou(maps, target):
    predicted = maps[0, 0] / maps[0, 0].max() > 0.5
    truth = target[0, 0] > 0.5
    return float((predicted & truth).sum() / (predicted | truth).sum())


def test_attention_loss_alone_moves_attention_onto_the_mask(scene_dir):
    parts, capture, input_ids, positions, target, latents = _setup(scene_dir)
    params = [*parts.unet.parameters(), *parts.text_encoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    with torch.no_grad():
        start_loss, start_maps = _attention_loss(parts, capture, input_ids, positions, target, latents)
    for _ in range(60):
        loss, _ = _attention_loss(parts, capture, input_ids, positions, target, latents)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        end_loss, end_maps = _attention_loss(parts, capture, input_ids, positions, target, latents)
    # measured here: MSE 0.67 -> 0.0001, IoU 0.19 -> 0.83 (seeded); asserted with wide margins
    assert end_loss.item() < 0.25 * start_loss.item()
    assert _iou(end_maps, target) > _iou(start_maps, target) + 0.3


def test_gradient_checkpointing_keeps_attention_loss_gradients(scene_dir):
    grads = []
    for checkpointing in (False, True):
        parts, capture, input_ids, positions, target, latents = _setup(scene_dir, checkpointing)
        loss, _ = _attention_loss(parts, capture, input_ids, positions, target, latents)
        loss.backward()
        grads.append(parts.text_encoder.get_input_embeddings().weight.grad[49408].clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])
