"""The toy world's MM-DiT: SD3's design (two CLIP encoders, joint-attention transformer, rectified flow) at toy
size, over the toy world's pruned tokenizer and its exact pixel-shuffle VAE. It has no T5, and its text
sequence is the CLIP tokens alone (SD3 pads with 256 zero T5 rows, which would be most of a toy's sequence),
so its pipeline is called with `max_sequence_length=0` (`call_kwargs`); a plain StableDiffusion3Pipeline user
passes the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from break_a_scene.families.sd3 import StableDiffusion3


@dataclass
class ToyMMDiT(StableDiffusion3):
    t5_length: ClassVar[int] = 0
