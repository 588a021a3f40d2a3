"""vaelab: Variational Autoencoders for images: train, evaluate, look, classify, study."""

__version__ = "0.1.0"


def load_run(path, checkpoint: str = "best", device="cpu"):
    """Rebuild a trained run from its directory: model (with weights), config and data spec, no flags.

    ``checkpoint``: "best" (falls back to "last"), "last", or a .ckpt path; ``device``: where the model goes.
    """
    from .run import load_run as _load_run

    return _load_run(path, checkpoint=checkpoint, device=device)


__all__ = ["__version__", "load_run"]
