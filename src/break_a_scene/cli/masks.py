"""`bas-masks image=photo.jpg 'masks.classes=[cup,saucer,spoon]' hydra.run.dir=my_scene`."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from break_a_scene.cli._entry import friendly_errors, hydra_entry
from break_a_scene.config import config_dir, register_resolvers

register_resolvers()
log = logging.getLogger(__name__)


@hydra_entry
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="masks")
@friendly_errors
def main(cfg: DictConfig) -> None:
    from break_a_scene.masks import PREVIEW, make_scene, read_classes, scene_image

    image = scene_image(cfg.image)
    settings = OmegaConf.to_container(cfg.masks, resolve=True)
    classes = read_classes(image, settings.pop("classes"))
    out_dir = Path(cfg.paths.output_dir)
    make_scene(image, classes, out_dir, overwrite=cfg.overwrite, **settings)
    log.info("wrote the scene to %s; check %s, then: bas-train data.scene.folder=%s", out_dir, out_dir / PREVIEW,
             out_dir)


if __name__ == "__main__":
    main()
