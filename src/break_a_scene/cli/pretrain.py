"""`bas-pretrain`: pretrain the toy world's text-to-image model (see conf/pretrain.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from break_a_scene.cli._entry import friendly_errors, hydra_entry, quiet_console
from break_a_scene.config import config_dir, register_resolvers

register_resolvers()


@hydra_entry
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="pretrain")
@friendly_errors
def main(cfg: DictConfig) -> None:
    from break_a_scene.toyworld.pretrain import pretrain

    quiet_console()
    pretrain(cfg)


if __name__ == "__main__":
    main()
