"""`bas-evaluate`: one evaluation trial (method variant x scene x seed), or a sweep of them with `-m`.
See conf/evaluate.yaml; `bas-aggregate` turns the trials' rows into the table and the figure."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from break_a_scene.cli._entry import friendly_errors, hydra_entry, quiet_console
from break_a_scene.config import config_dir, register_resolvers
from break_a_scene.evaluation import benchmark_sets

register_resolvers()
benchmark_sets.register_resolvers()


@hydra_entry
@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
@friendly_errors(keep_results=True)  # a trial folder keeps its trained pipeline and rows for the next run
def main(cfg: DictConfig) -> None:
    from break_a_scene.evaluation.runner import run_trial

    quiet_console()
    run_trial(cfg)


if __name__ == "__main__":
    main()
