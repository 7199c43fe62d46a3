"""Projection of photos into a generator's latent space (`progan project`)."""
