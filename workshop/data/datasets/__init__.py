"""Dataset loaders, one module per modality (`image`: MNIST, Fashion-MNIST)."""
