"""Data: every image source our users bring, loaded into one `ImageSet`.

    load("mnist")                       # IDX files under $VAELAB_DATA/mnist or ~/.cache/vaelab/mnist,
                                        # downloaded (MD5-checked) when absent; also fashion-mnist, kmnist,
                                        # emnist-<balanced|byclass|bymerge|digits|letters|mnist>
    load("mnist-sample")                # 5,000 real MNIST digits shipped inside vaelab
    load("idx:some/dir")                # any train/t10k IDX quadruple
    load("npz:digits.npz", classes=["1", "4", "8"])   # also npy:FILE; images_key= / labels_key=
    load("folder:photos/", image_size=128, channels=3)  # class and split subfolders; decoded once, cached
    load("photos/")                     # a bare path: the kind is guessed from what is there

Environment: VAELAB_DATA (where datasets are looked for first), VAELAB_CACHE (downloads and decoded
folders), VAELAB_MIRROR (download base URLs), VAELAB_NO_CACHE=1 (do not cache decoded folders).
"""

from .imageset import SPLITS, ImageSet, concat, to_float
from .load import from_config, load, parse_spec

__all__ = ["SPLITS", "ImageSet", "concat", "from_config", "load", "parse_spec", "to_float"]
