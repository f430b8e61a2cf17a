"""Writes the trained model as a diffusers pipeline with its manifest when training is complete.

It runs at the end of `fit`, which Lightning reaches also when a resumed run finds every step already done,
so a run killed during its export finishes the export when it is resumed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from break_a_scene.export import export_pipeline
from break_a_scene.run_view import CallbackView

log = logging.getLogger(__name__)


class ExportPipeline(L.Callback):
    def __init__(self, dirpath: str, lora: str = "asset"):
        self.dirpath = Path(dirpath)
        self.lora = lora  # with a LoRA phase 2: asset, fused or both (export.export_pipeline)

    def on_fit_end(self, trainer: L.Trainer, module: CallbackView) -> None:
        facts = module.facts
        if not trainer.is_global_zero or trainer.global_step < facts.total_steps:
            return
        manifest = {
            "tokens": facts.tokens.names,
            "token_ids": facts.tokens.ids,
            "encoder_token_ids": [facts.tokens.ids_in(e) for e in range(max(len(facts.tokens.encoder_ids), 1))],
            "initializer_words": facts.tokens.initializer_words,
            "steps": {"phase1": facts.phase1_steps, "phase2": facts.phase2_steps},
            "resolution": facts.resolution,
            "attention_resolution_divisor": facts.attention_resolution_divisor,
            **facts.run_info,
        }
        with module.inference_family() as family:  # the processors the model had before training
            path = export_pipeline(family, self.dirpath, manifest, self.lora)
        log.info("exported the trained pipeline to %s", path)
        for logger in trainer.loggers:
            logger.log_hyperparams({"exported_pipeline": str(path)})
