"""Diffusion models. Importing this package registers its model types."""
