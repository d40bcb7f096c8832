"""Products of energy-based models: compositional generation by summing energies.

A product of experts (Hinton 2002, "Training products of experts by
minimizing contrastive divergence") p(x) proportional to prod_i p_i(x)^w_i
has energy sum_i w_i E_i(x). With conditional components E_i(x | c_i) it is
the conjunction of concepts of Du, Li & Mordatch 2020 ("Compositional Visual
Generation and Inference with Energy Based Models", arXiv:2004.06030):
samples carry every attribute c_i at once. The product is sampled by the same
compiled samplers as a single model.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.models.ebm import samplers
from workshop.models.layers.compiled_sampling import compiled_sampling

__all__ = ["ProductOfEBMs"]


class ProductOfEBMs(nnx.Module):
    """The energy sum_i weights[i] * E_i(x | labels[i]) of several EBMs of one input shape.

    Args:
      components: models with `energy(x, labels=None) -> [B]` and
        `input_shape` (e.g. `EBM`s, or other products).
      labels: one entry per component: None for an unconditional component,
        an integer class for a conditional one (the same label for every x).
      weights: one positive float per component (default all 1), the
        exponents of the product (temperatures of the parts).

    Raises:
      ValueError: no components, components of different input shapes, or
        labels/weights of the wrong length.
    """

    def __init__(self, components: Sequence[Any], *, labels: Sequence[int | None] | None = None,
                 weights: Sequence[float] | None = None):
        components = list(components)
        if not components:
            raise ValueError("ProductOfEBMs needs at least one component")
        shapes = [tuple(int(s) for s in c.input_shape) for c in components]
        if len(set(shapes)) > 1:
            listed = ", ".join(f"component {i}: {s}" for i, s in enumerate(shapes))
            raise ValueError(f"cannot compose EBMs of different input shapes ({listed}); "
                             "every component must model the same space")
        labels = [None] * len(components) if labels is None else list(labels)
        weights = [1.0] * len(components) if weights is None else [float(w) for w in weights]
        for name, values in (("labels", labels), ("weights", weights)):
            if len(values) != len(components):
                raise ValueError(f"{name} has {len(values)} entries for {len(components)} components")
        if any(w <= 0 for w in weights):
            raise ValueError(f"weights must be positive, got {weights}")
        self.components = nnx.List(components)
        self.labels = tuple(None if c is None else int(c) for c in labels)
        self.weights = tuple(weights)
        self.input_shape = shapes[0]

    def energy(self, x: jax.Array, labels: None = None) -> jax.Array:
        """sum_i w_i E_i(x | labels_i): `[B, *input_shape] -> [B]`."""
        if labels is not None:
            raise ValueError("a ProductOfEBMs fixes each component's label at construction; pass labels=None")
        total = jnp.zeros((x.shape[0],), jnp.float32)
        for component, label, weight in zip(self.components, self.labels, self.weights):
            lab = None if label is None else jnp.full((x.shape[0],), label, jnp.int32)
            total = total + weight * component.energy(x, lab)
        return total

    def sample(self, x0: jax.Array, *, rngs: nnx.Rngs, num_steps: int, step_size: float, sampler: str = "langevin",
               **options) -> samplers.SamplerResult:
        """Runs `sampler` on the summed energy from `x0` `[B, *input_shape]` (see `samplers.run_sampler`)."""
        if tuple(x0.shape[1:]) != self.input_shape:
            raise ValueError(f"x0 must be [B, {self.input_shape}], got {tuple(x0.shape)}")
        graphdef, state = nnx.split(self)
        state = jax.lax.stop_gradient(state)
        energy_fn = lambda x: nnx.merge(graphdef, state).energy(x)  # noqa: E731
        return samplers.run_sampler(sampler, energy_fn, x0, key=rngs.sample(), num_steps=num_steps,
                                    step_size=step_size, **options)

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, num_steps: int, step_size: float,
                 init_range: tuple[float, float] = (0.0, 1.0), sampler: str = "langevin", **options) -> jax.Array:
        """Samples from uniform noise on `init_range`: `[n_samples, *input_shape]`."""
        key = rngs.sample()
        x0 = samplers.chain_uniform(jax.random.fold_in(key, 0), (n_samples, *self.input_shape), *init_range)
        return self.sample(x0, rngs=nnx.Rngs(jax.random.fold_in(key, 1)), num_steps=num_steps,
                           step_size=step_size, sampler=sampler, **options).samples
