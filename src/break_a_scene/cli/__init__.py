"""Thin Hydra entry points; the work is done by the library modules they call."""
