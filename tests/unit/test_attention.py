import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from omegaconf import OmegaConf

from break_a_scene.attention import AttentionCapture
from break_a_scene.families.stable_diffusion import loss_layer_names, released_capture_layers
from break_a_scene.families.stable_diffusion import unet_attention_layers as attention_layers
from tests.conftest import CONF


def sd21_base_unet_on_meta() -> UNet2DConditionModel:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / "sd21_base_arch.yaml").components.unet)
    with torch.device("meta"):
        return UNet2DConditionModel(**cfg)


def test_sd21_base_loss_layers_are_the_five_16px_cross_attentions():
    unet = sd21_base_unet_on_meta()
    assert len(unet.attn_processors) == 32
    names = loss_layer_names(unet, latent_size=64, resolution=16)
    assert names == [
        "down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor",
        "down_blocks.2.attentions.1.transformer_blocks.0.attn2.processor",
        "up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor",
        "up_blocks.1.attentions.1.transformer_blocks.0.attn2.processor",
        "up_blocks.1.attentions.2.transformer_blocks.0.attn2.processor",
    ]
    heads = {n: unet.get_submodule(n.removesuffix(".processor")).heads for n in names}
    assert set(heads.values()) == {20}
    # the mid block (8x8) is excluded; at 768 px (latent 96) the same layers sit at 24x24
    assert loss_layer_names(unet, latent_size=96, resolution=24) == names
    assert len(released_capture_layers(unet, 64)) == 22  # all <= 32x32, self-attention too


def test_missing_resolution_is_explained():
    unet = sd21_base_unet_on_meta()
    with pytest.raises(ValueError, match=r"no cross-attention layer at 12x12.*\[8, 16, 32, 64\]"):
        loss_layer_names(unet, latent_size=64, resolution=12)


def _run(unet, rows=2, cond=None):
    torch.manual_seed(0)
    latents = torch.randn(rows, 4, 32, 32)
    text = torch.randn(rows, 77, 32) if cond is None else cond
    return unet(latents, torch.tensor([10] * rows), text).sample, text


def test_capture_only_touches_loss_layers_and_matches_sdpa(tiny):
    unet = tiny.unet
    expected, text = _run(unet)
    names = loss_layer_names(unet, 32, 8)
    assert names == [
        "down_blocks.2.attentions.0.transformer_blocks.0.attn2.processor",
        "up_blocks.0.attentions.0.transformer_blocks.0.attn2.processor",
        "up_blocks.0.attentions.1.transformer_blocks.0.attn2.processor",
    ]
    with AttentionCapture(unet, names) as capture:
        processors = unet.attn_processors
        others = [p for n, p in processors.items() if n not in names]
        assert len(others) == len(processors) - 3 and all(isinstance(p, AttnProcessor2_0) for p in others)
        got, _ = _run(unet, cond=text)
        assert set(capture.store.maps) == set(names)
        maps = capture.store.maps[names[0]]
        assert maps.shape == (2, 8, 64, 77)  # (rows, heads, 8*8, tokens)
        torch.testing.assert_close(maps.sum(-1), torch.ones(2, 8, 64))  # softmax over tokens
        conditional = capture.token_maps(torch.tensor([[5]]), rows=slice(1, None))  # the second half's rows
        expected_map = torch.stack([capture.store.maps[n][1:, :, :, 5].mean(1) for n in names]).mean(0)
        torch.testing.assert_close(conditional.reshape(1, 64), expected_map)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())  # put back


def test_captured_maps_keep_their_graph(tiny):
    names = loss_layer_names(tiny.unet, 32, 8)
    text = torch.randn(1, 77, 32, requires_grad=True)
    with AttentionCapture(tiny.unet, names) as capture:
        _run(tiny.unet, rows=1, cond=text)
        maps = capture.token_maps(torch.tensor([[5, 6]]))
        assert maps.shape == (1, 2, 8, 8)
        maps[0, 0].sum().backward()
    assert text.grad is not None and text.grad[0, 5].abs().sum() > 0


def test_token_maps_average_layers_and_heads():
    capture = AttentionCapture.__new__(AttentionCapture)
    capture.loss_layers = ["a", "b"]
    from break_a_scene.attention import AttentionStore

    capture.store = AttentionStore()
    capture.store.maps["a"] = torch.zeros(1, 2, 4, 3)
    capture.store.maps["b"] = torch.zeros(1, 2, 4, 3)
    capture.store.maps["a"][0, 0, :, 2] = 4.0  # head 0 of layer a only: mean = 4 / (2 heads * 2 layers)
    out = capture.token_maps(torch.tensor([[2]]))
    assert out.shape == (1, 1, 2, 2) and torch.equal(out, torch.ones(1, 1, 2, 2))


def test_layer_resolutions_of_tiny(tiny):
    layers = {layer.name: layer.resolution for layer in attention_layers(tiny.unet, 32)}
    assert layers["down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor"] == 32
    assert layers["up_blocks.2.attentions.0.transformer_blocks.0.attn2.processor"] == 32
    assert layers["mid_block.attentions.0.transformer_blocks.0.attn2.processor"] == 8


def test_a_tokens_keys_are_summed_and_absent_keys_give_nothing():
    """maps (1 sample, 2 image queries, 4 text keys); token 0 has keys 1 and 3 (CLIP and T5), token 1 only key 2
    (its T5 copy was truncated: -1)."""
    from break_a_scene.attention import sum_over_keys

    maps = torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]])
    positions = torch.tensor([[[1, 3], [2, -1]]])
    assert torch.allclose(sum_over_keys(maps, positions), torch.tensor([[[0.6, 0.3], [0.4, 0.2]]]))


def test_sd3_reads_a_tokens_clip_key_and_its_t5_key_after_the_clip_positions():
    from break_a_scene.families.sd3 import StableDiffusion3

    clip = torch.tensor([[[49406, 320, 49408, 49407]]])
    t5 = torch.tensor([[[5, 2234, 1, 0]]])
    ids = torch.cat([clip, clip, t5], dim=1)  # (1, 3, 4)
    positions = StableDiffusion3.key_positions(ids, [torch.tensor([[49408]]), torch.tensor([[49408]]),
                                                     torch.tensor([[2234]])], [4, 4, 4])
    assert positions.tolist() == [[[2, 4 + 1]]]
    without_t5 = StableDiffusion3.key_positions(ids[:, :2], [torch.tensor([[49408]])] * 2, [4, 4])
    assert without_t5.tolist() == [[[2]]]


def test_attention_layers_picks_among_the_loss_layers(tiny):
    from break_a_scene.families.stable_diffusion import StableDiffusion

    assert isinstance(tiny, StableDiffusion)
    capture = tiny.attention_capture(8, 4)
    every = list(capture.loss_layers)
    assert len(every) >= 2
    capture.select([1])
    assert capture.loss_layers == every[1:2] and set(capture.processors) == {every[1]}
    capture.install()
    replaced = [name for name, proc in tiny.unet.attn_processors.items() if proc in capture.processors.values()]
    assert replaced == every[1:2]  # the dropped layer keeps its fused processor
    capture.remove()
    with pytest.raises(ValueError, match=r"method.attention_layers=\[5\] must pick among the"):
        tiny.attention_capture(8, 4).select([5])
