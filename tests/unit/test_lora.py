"""LoRA adapters and their merge, without training: DoRA and text-encoder adapters included."""

import torch

from break_a_scene.lora import LoraSettings, adapted_modules, add_lora, lora_parameters, merged_lora
from tests.conftest import tiny_components


def test_merged_export_computes_what_the_adapters_compute_and_restores_the_base_bit_for_bit():
    parts = tiny_components()
    add_lora(parts, LoraSettings(rank=4, alpha=8, dora=True, text_encoders=True))
    assert sorted(adapted_modules(parts)) == ["text_encoder", "unet"]
    assert any("lora_magnitude_vector" in n for n, _ in parts.unet.named_parameters())  # DoRA
    torch.manual_seed(0)
    with torch.no_grad():
        for param in lora_parameters(parts.unet) + lora_parameters(parts.text_encoder):
            param.add_(torch.randn_like(param) * 0.1)  # B starts at zero: make the adapters do something
    base = {n: p.detach().clone() for n, p in parts.unet.named_parameters() if ".lora_" not in n}
    ids = parts.tokenize(["a photo of a cat"])
    latents, t = torch.randn(1, 4, 32, 32), torch.tensor([500])

    def run():
        with torch.no_grad():
            text, extra = parts.encode_prompt(ids, 64)
            return parts.unet(latents, t, text, **extra).sample

    adapted = run()
    with merged_lora(parts):
        assert not lora_parameters(parts.unet) and not lora_parameters(parts.text_encoder)
        merged = run()
    assert torch.allclose(merged, adapted, atol=1e-5) and not torch.allclose(adapted, _without_adapters(parts, run))
    assert all(torch.equal(p, base[n]) for n, p in parts.unet.named_parameters() if ".lora_" not in n)
    assert torch.equal(run(), adapted)


def _without_adapters(parts, run):
    parts.unet.disable_adapters()
    try:
        return run()
    finally:
        parts.unet.enable_adapters()
