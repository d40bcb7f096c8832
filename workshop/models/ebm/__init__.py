"""Energy-based models. Importing this package registers its model types."""
