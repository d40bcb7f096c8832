"""Training: trainer, optimizers, callbacks, checkpoints and the train/sample binaries."""
