"""`bas-generate pipeline=outputs/<run>/pipeline [prompts='["a photo of <asset0> in the snow"]']`."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig, OmegaConf

from break_a_scene.cli._entry import friendly_errors, hydra_entry
from break_a_scene.config import config_dir, register_resolvers

register_resolvers()
log = logging.getLogger(__name__)


@hydra_entry
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="generate")
@friendly_errors
def main(cfg: DictConfig) -> None:
    from break_a_scene.generate import generate

    kwargs = OmegaConf.to_container(cfg.generation, resolve=True)
    records = generate(pipeline=cfg.pipeline, output_dir=cfg.paths.output_dir, **kwargs)
    log.info("wrote %d images to %s", len(records), cfg.paths.output_dir)


if __name__ == "__main__":
    main()
