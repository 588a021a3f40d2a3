"""Figures. Functions take arrays (or a run) and return a matplotlib Figure or an image array; only the
CLI and the training callbacks write files."""

from .grid import make_grid, png_bytes, to_uint8

__all__ = ["make_grid", "png_bytes", "to_uint8"]
