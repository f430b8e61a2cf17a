"""Break-A-Scene: extract several concepts from one image as text tokens (Avrahami et al., 2023)."""

__version__ = "0.1.0"
