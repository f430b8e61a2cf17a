"""An exact, parameter-free "VAE" for the toy world: pixel-unshuffle (32x32x3 -> 16x16x12) and back.

A learned VAE this small blurs 32 px shapes and shifts their colours (a 400-step AutoencoderKL left the judge
reading 12% of reconstructed scenes right), and every later stage inherits that. Space-to-depth loses
nothing and costs nothing. The class speaks AutoencoderKL's language where the framework and
StableDiffusionPipeline use it: `encode(x).latent_dist.sample()`, `decode(z).sample`, and a config with
`scaling_factor`, `shift_factor` (SD3's pipeline reads it) and `block_out_channels` (whose length gives the
pipeline's downsampling factor).

`DiffusionPipeline.from_pretrained` finds the class through the module an export's model_index.json names
(the framework imports it first). StableDiffusionPipeline annotates its `vae` as AutoencoderKL, so diffusers
warns about any other class; importing this module registers a filter for exactly that notice about this class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import ModelMixin  # noqa: F401  (diffusers looks the base class up in this module)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_outputs import AutoencoderKLOutput


class _ExactLatent:
    """A point mass: sampling returns the latent itself. Like diffusers' DiagonalGaussianDistribution it is
    built from its `parameters`, so posteriors of several images can be stacked (the latent cache does)."""

    def __init__(self, parameters: torch.Tensor):
        self.parameters = self.latent = parameters

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.latent

    def mode(self) -> torch.Tensor:
        return self.latent

    def kl(self) -> torch.Tensor:
        return torch.zeros(self.latent.shape[0], device=self.latent.device)


@dataclass
class _Encoded:
    latent_dist: _ExactLatent


class PixelShuffleVAE(ModelMixin, ConfigMixin):
    config_name = "config.json"

    @register_to_config
    def __init__(self, factor: int = 2, in_channels: int = 3, scaling_factor: float = 1.0,
                 block_out_channels: tuple[int, ...] = (12, 12), latent_channels: int = 12,
                 shift_factor: float = 0.0):
        super().__init__()
        if 2 ** (len(block_out_channels) - 1) != factor or latent_channels != in_channels * factor**2:
            raise ValueError("block_out_channels must have log2(factor) + 1 entries and latent_channels "
                             "in_channels * factor**2")
        # one saved buffer: the model then has a device and a dtype (the pipeline asks for them) and a
        # weights file (diffusers' loader expects one)
        self.register_buffer("anchor", torch.zeros(1))

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        latent = F.pixel_unshuffle(x, self.config.factor)
        return AutoencoderKLOutput(latent_dist=_ExactLatent(latent)) if return_dict else (_ExactLatent(latent),)

    def decode(self, z: torch.Tensor, return_dict: bool = True, generator=None):
        image = F.pixel_shuffle(z, self.config.factor)
        return DecoderOutput(sample=image) if return_dict else (image,)


def _not_about_this_vae(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not (message.startswith("Expected types for vae") and PixelShuffleVAE.__name__ in message)


logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(_not_about_this_vae)
