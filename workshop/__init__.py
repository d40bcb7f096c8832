"""Workshop: generative models on JAX and Flax NNX.

Packages: `core` (protocols, configuration, registry, device manager, losses),
`models` (one package per family, shared layers, factories), `data`, `train`,
`eval`, and `generative_models` (the import paths of the user guide).
"""
