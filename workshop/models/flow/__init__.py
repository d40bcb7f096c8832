"""Normalizing flows. Importing this package registers its model types."""
