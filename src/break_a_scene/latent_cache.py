"""The VAE side of a training step: each picture the steps see again and again (the scene, its flip, the class
images) encoded once, its posterior sampled anew every step (`method.cache_latents`)."""

from __future__ import annotations

import torch


class LatentCache:
    """Posteriors by picture key. With `enabled`, each keyed picture is encoded once, alone (so its posterior does
    not depend on the batch it first came in), and a batch's posterior is stacked from the cached ones: sampling
    it draws exactly what sampling a fresh encoding would. A batch with an unkeyed picture (drawn anew: re-placed,
    degraded) is encoded whole."""

    def __init__(self, vae: torch.nn.Module, enabled: bool = True):
        self.vae = vae
        self.entries: dict[str, object] | None = {} if enabled else None

    def posterior(self, pixels: torch.Tensor, keys: list[str | None]):
        if self.entries is None or None in keys:
            return self.encode(pixels)
        for row, key in enumerate(keys):
            if key not in self.entries:
                self.entries[key] = self.encode(pixels[row : row + 1])
        first = self.entries[keys[0]]
        return type(first)(torch.cat([self.entries[key].parameters for key in keys]))

    def encode(self, pixels: torch.Tensor):
        """The VAE posterior with float32 parameters, whatever dtype the VAE computes in (the step's noise and
        latents are float32 as the trainable weights are)."""
        posterior = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
        return type(posterior)(posterior.parameters.float())
