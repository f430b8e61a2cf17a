"""`bas-train`: train Break-A-Scene on one scene. Overrides use plain Hydra syntax, e.g.
`bas-train experiment=toyworld`, `bas-train model=sd21_base data.scene.folder=my_scene trainer=gpu`,
`bas-train -m experiment=official variant=no_phase1,no_masked_loss`."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from break_a_scene.cli._entry import friendly_errors, hydra_entry, quiet_console
from break_a_scene.config import config_dir, register_resolvers

register_resolvers()


@hydra_entry
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@friendly_errors
def main(cfg: DictConfig) -> None:
    from break_a_scene.training import train

    quiet_console()
    train(cfg)


if __name__ == "__main__":
    main()
