"""`vaelab explore`: a small local web app over a run's latent space (map, live decoding, traversal sliders,
interpolation, attribute arithmetic, samples). Standard library HTTP server, plain HTML/JS/CSS shipped in
the package: nothing is fetched from the network.

    >>> from vaelab import load_run
    >>> from vaelab.explore import Explorer, make_server
    >>> server = make_server(Explorer(load_run("runs/mnist")), port=0)
    >>> server.serve_until_interrupted()   # server.url is the page; Ctrl-C stops it cleanly
"""

from .server import ExploreServer, make_server
from .state import Explorer

__all__ = ["ExploreServer", "Explorer", "make_server"]
