"""Lightning callbacks of the framework."""

from break_a_scene.callbacks.export import ExportPipeline
from break_a_scene.callbacks.phase_switch import PhaseSwitch
from break_a_scene.callbacks.progress import ProgressBar
from break_a_scene.callbacks.timing import PhaseTimer
from break_a_scene.callbacks.visuals import AttentionMapLogger, SampleLogger, SceneLogger

__all__ = [
    "AttentionMapLogger", "ExportPipeline", "PhaseSwitch", "PhaseTimer", "ProgressBar", "SampleLogger", "SceneLogger",
]
