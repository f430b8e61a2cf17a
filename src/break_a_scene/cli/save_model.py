"""`bas-save-model model=tiny_sdxl out=models/tiny_sdxl`: any model config (a tiny one, an `*_arch` one with
random weights, or a loaded one) written as a diffusers pipeline folder, for a LoRA asset's base, QLoRA, or
anything that loads a model from disk."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from break_a_scene.cli._entry import friendly_errors, hydra_entry
from break_a_scene.config import config_dir, register_resolvers

register_resolvers()
log = logging.getLogger(__name__)


@hydra_entry
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="save_model")
@friendly_errors
def main(cfg: DictConfig) -> None:
    from break_a_scene.model_folders import loading_configs, save_model

    family, folder = save_model(cfg.model.components, cfg.out)
    configs = loading_configs(type(family), Path(config_dir()))
    use = (f"model={configs[0]} model.components.pretrained_model_name_or_path={folder}" if configs else
           f"a model config whose _target_ is {type(family).__qualname__}.load")
    log.info("saved %s (%s) to %s; load it with %s", type(family).__name__, family.source, folder, use)


if __name__ == "__main__":
    main()
