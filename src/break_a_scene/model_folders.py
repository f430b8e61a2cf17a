"""A model config as a pipeline folder on disk (`bas-save-model`): what a LoRA asset names as its base, what
QLoRA loads and quantizes, and what a test loads through the same code that loads SD 2.1 from a user's cache.
Before any weight is made, the model's size is counted on the meta device and checked against the memory of
the device it would be built on (an `*_arch` config builds billions of parameters)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from break_a_scene.errors import UserInputError
from break_a_scene.families.base import ModelFamily
from break_a_scene.models import quiet_loading
from break_a_scene.outputs import check_free_space, check_writable

FLOAT32_BYTES = 4


def available_memory(device: str) -> int:
    """Bytes that can still be allocated on `device`: the host's available memory (MemAvailable), or a GPU's
    free memory."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserInputError(f"model.components.device={device}, and this machine has no CUDA GPU; build on "
                                 f"the CPU (model.components.device=cpu) or run on a GPU machine.")
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def counted_parameters(config: DictConfig) -> int:
    """How many parameters a `build` model config makes, counted on the meta device (no memory, seconds)."""
    meta = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    with open_dict(meta):
        meta.device = "meta"
    with quiet_loading():
        family: ModelFamily = instantiate(meta)
    return sum(p.numel() for part in family.parts() for p in part.parameters())


def check_model_fits(config: DictConfig) -> None:
    """Refuse, before any weight is made, a model config whose float32 weights alone do not fit the memory of
    the device it builds them on. Only configs that name a `device` (the full-size `*_arch` ones) are counted:
    a loaded model's size is its files', and the tiny configs fit anywhere."""
    if "device" not in config or not str(config.get("_target_", "")).endswith(".build"):
        return
    device = str(config.device)
    needed = counted_parameters(config) * FLOAT32_BYTES
    free = available_memory(device)
    if needed > free:
        raise UserInputError(
            f"this model config builds {needed / FLOAT32_BYTES / 1e9:.1f} B parameters ({needed / 2**30:.0f} GiB in "
            f"float32) on model.components.device={device}, which has {free / 2**30:.0f} GiB free; run it on a "
            f"machine with the memory (model.components.device=cuda on a GPU that holds it), or choose a smaller "
            f"model config (conf/model/: tiny, tiny_sdxl, tiny_sd3, tiny_flux)."
        )


def loading_configs(family: type[ModelFamily], conf_dir: Path) -> list[str]:
    """The model configs (conf/model/) that load a folder of this family from a path given as
    `model.components.pretrained_model_name_or_path`: those whose default is a hub id first, then the shipped
    toy models' (whose default is the package's own folder)."""
    target = f"{family.__module__}.{family.__qualname__}.load"
    found = []
    for file in sorted((conf_dir / "model").glob("*.yaml")):
        config = OmegaConf.to_container(OmegaConf.load(file), resolve=False).get("components")
        if isinstance(config, dict) and config.get("_target_") == target:
            shipped = "bas.asset" in str(config.get("pretrained_model_name_or_path", ""))
            found.append((shipped, file.stem))
    return [name for _, name in sorted(found)]


def save_model(config: DictConfig, out: str | Path) -> tuple[ModelFamily, Path]:
    """Build or load the configured model and write it as a diffusers pipeline folder at `out` (a new folder:
    written beside it, then moved into place, so a stopped command leaves no half folder)."""
    final = Path(out)
    if final.exists():
        raise UserInputError(f"out='{final}' exists; bas-save-model writes a new folder and replaces nothing. Choose "
                             f"another path for out, or move that folder away.")
    check_writable(final.parent, "out")
    check_model_fits(config)
    family: ModelFamily = instantiate(config)
    weights = sum(p.numel() * p.element_size() for part in family.parts() for p in part.parameters())
    check_free_space(final.parent, weights, "out", "the model folder")
    staging = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        with quiet_loading(logs=False):
            family.save_pipeline(staging)
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return family, final
