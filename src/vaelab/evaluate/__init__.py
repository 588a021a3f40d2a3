"""Evaluation: ELBO terms, importance-sampled NLL, reconstruction quality, FID with a domain feature network."""
