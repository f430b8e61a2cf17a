"""Lightning callbacks of the framework: pictures, timing and the export. Each reads the module only through
`module.CallbackView`; the phase switch is the module's own."""

from break_a_scene.callbacks.export import ExportPipeline
from break_a_scene.callbacks.progress import ProgressBar
from break_a_scene.callbacks.timing import PhaseTimer
from break_a_scene.callbacks.visuals import AttentionMapLogger, SampleLogger, SceneLogger

__all__ = [
    "AttentionMapLogger", "ExportPipeline", "PhaseTimer", "ProgressBar", "SampleLogger", "SceneLogger",
]
