"""ml_collections config files for //workshop/train:train, one per model."""
