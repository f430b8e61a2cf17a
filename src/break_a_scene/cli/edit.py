"""`bas-edit pipeline=outputs/<run>/pipeline image=room.jpg mask=region.png "prompt='a photo of <asset0>'"`."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from break_a_scene.cli._entry import friendly_errors, hydra_entry
from break_a_scene.config import config_dir, register_resolvers

register_resolvers()
log = logging.getLogger(__name__)


@hydra_entry
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="edit")
@friendly_errors
def main(cfg: DictConfig) -> None:
    from break_a_scene.editing import edit

    kwargs = OmegaConf.to_container(cfg.edit, resolve=True)
    records = edit(pipeline=cfg.pipeline, image=cfg.image, mask=cfg.mask, prompt=cfg.prompt,
                   output_dir=cfg.paths.output_dir, **kwargs)
    log.info("wrote %d edited images to %s", len(records), cfg.paths.output_dir)


if __name__ == "__main__":
    main()
