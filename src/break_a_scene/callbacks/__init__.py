"""Lightning callbacks of the framework."""

from break_a_scene.callbacks.export import ExportPipeline
from break_a_scene.callbacks.phase_switch import PhaseSwitch

__all__ = ["ExportPipeline", "PhaseSwitch"]
