"""The latent space of a trained run: encoding, samplers, and classifiers with few labels."""

from .encode import Latents, check_fits, encode, resolve_data

__all__ = ["Latents", "check_fits", "encode", "resolve_data"]
