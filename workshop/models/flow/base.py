"""What every flow model shares: dequantisation, exact log_prob, sampling, the training API.

A flow is an invertible map f from data to a standard normal base space, so
log p(x) = log N(f(x); 0, I) + log|det df/dx| (Dinh et al. 2016, Real NVP,
arXiv:1605.08803, eq. 3). Subclasses build f from the bijectors of this
package and implement `_to_latent` / `_from_latent`; this class adds:

* Images (`input_shape` `(H, W, C)`) are 8-bit data given as k/255 in [0, 1].
  They are dequantised with uniform noise, y = (255 x + u) / 256,
  u ~ U[0, 1)^D (Theis, van den Oord & Bethge 2016, arXiv:1511.01844;
  Uria et al. 2013), then mapped to logit space, h = logit(a + (1 - 2a) y)
  (Real NVP section 4.1) or, with `logit_alpha=0`, centred, h = y - 1/2
  (Glow). `log_prob` is the log-likelihood of the DISCRETE image: the
  density of y plus log(1/256) per dimension, a lower bound in expectation
  over u; with `num_samples=K` it averages K noise draws inside the log (an
  importance-weighted bound with the uniform proposal, tighter as K grows).
  Without `rngs` it uses the bin centres (u = 1/2). Bits per dimension of
  this value are the figure flow papers report.
* Vectors (`input_shape` `(D,)`) are continuous: `log_prob` is the density.
* Optional class conditioning: `num_classes` in the parameters gives every
  layer a learned label embedding; the model then has a `num_classes`
  attribute and takes `labels=` (the Trainer passes `batch["label"]`).

Precision (`workshop.core.device_manager`): under a mixed policy the
conditioner networks, MADE's masked layers and x W of the invertible 1x1
convolutions compute in the compute dtype (bfloat16/float16). Kept in float32
on purpose, whatever the policy: the flow state between layers, the
elementwise transforms (affine scales; the spline's softmax bin
normalisation, bin search and inverse root, `spline.py`), the LU factors of
the 1x1 convolutions, ActNorm, every log-det, the dequantisation and logit
preprocessing, log_prob and the loss.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, PositiveInt

from workshop.core import losses, registry
from workshop.core.configuration import ModelConfiguration
from workshop.models.layers import LabelEmbedding, compiled_sampling, validate_labels

__all__ = ["FlowModel", "FlowParameters"]

_LABEL_FEATURES = 32
_NUM_BINS_8BIT = 256


class FlowParameters(pydantic.BaseModel):
    """`parameters` every flow model takes."""

    model_config = ConfigDict(extra="forbid")

    hidden_channels: PositiveInt = Field(64, description="width of the CNN conditioners (images)")
    hidden_features: list[PositiveInt] = Field(default_factory=lambda: [128, 128],
                                               description="hidden widths of the MLP/MADE conditioners (vectors)")
    logit_alpha: float = Field(0.05, ge=0.0, lt=0.5,
                               description="images: logit(a + (1-2a) y) preprocessing; 0 centres instead (y - 1/2)")
    num_classes: PositiveInt | None = Field(None, description="condition on integer labels in [0, num_classes)")


class FlowModel(nnx.Module):
    """Base of the flow models; see the module docstring.

    Args:
      config: `model_type`, `input_shape`, `num_flows` and `parameters`.
      rngs: `params` stream (or default) for the initialisers.
    """

    _schema: type[FlowParameters] = FlowParameters

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = registry.typed_parameters(config.model_type, config.parameters, self._schema)
        self.model_type = config.model_type
        shape = tuple(int(s) for s in config.input_shape)
        if len(shape) not in (1, 3):
            raise ValueError(f"model_type {config.model_type!r} works on images (H, W, C) or vectors (D,); "
                             f"got input_shape {shape}")
        self.input_shape = shape
        self.is_image = len(shape) == 3
        if self.is_image:
            # log P of the discrete image under uniform dequantisation (Theis et al. 2016, arXiv:1511.01844)
            self.likelihood_estimate = "dequantisation bound"
            self.likelihood_data = ("8-bit images k/255: log P of the discrete image under uniform dequantisation "
                                    "(Theis et al. 2016), a lower bound in expectation over the noise")
        else:
            self.likelihood_estimate, self.likelihood_data = "exact", "continuous vectors: the density"
        self.num_dims = math.prod(shape)
        self.num_flows = int(config.num_flows)
        self.logit_alpha = float(p.logit_alpha)
        self.cond_features = 0
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)
            self.cond_features = _LABEL_FEATURES
            self.label_embedding = LabelEmbedding(self.num_classes, _LABEL_FEATURES, rngs=rngs)
        self._build(p, rngs=rngs)

    # ------------------------------------------------------ subclass hooks
    def _build(self, p: Any, *, rngs: nnx.Rngs) -> None:
        raise NotImplementedError

    def _to_latent(self, h: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """`[B, *input_shape]` (preprocessed) -> (`[B, D]` base point, `[B]` log|det|)."""
        raise NotImplementedError

    def _from_latent(self, z: jax.Array, cond: jax.Array | None) -> jax.Array:
        """`[B, D]` base point -> `[B, *input_shape]` (preprocessed space)."""
        raise NotImplementedError

    # ----------------------------------------------------------- internals
    def _cond(self, labels: Any, batch_size: int) -> jax.Array | None:
        if self.cond_features:
            labels = validate_labels(labels, self.num_classes, batch_size, model_name=f"model_type {self.model_type!r}")
            return self.label_embedding(labels)
        if labels is not None:
            raise ValueError(f"model_type {self.model_type!r} is unconditional and takes no labels; "
                             "set parameters num_classes to condition on labels")
        return None

    def _check_input(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"model_type {self.model_type!r} was configured for input_shape {self.input_shape} "
                             f"and takes batches [B, {', '.join(map(str, self.input_shape))}]; "
                             f"got shape {tuple(x.shape)}")
        return x.astype(jnp.float32)

    def _preprocess(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Continuous image y in (0, 1) -> flow input h, with log|dh/dy| `[B]`."""
        a = self.logit_alpha
        if a == 0.0:
            return y - 0.5, jnp.zeros((y.shape[0],), jnp.float32)
        s = a + (1.0 - 2.0 * a) * y
        h = jnp.log(s) - jnp.log1p(-s)
        log_det = self.num_dims * math.log(1.0 - 2.0 * a) - losses.sum_except_batch(jnp.log(s) + jnp.log1p(-s))
        return h, log_det

    def _postprocess(self, h: jax.Array) -> jax.Array:
        """Inverse of `_preprocess`, clipped to [0, 1]."""
        a = self.logit_alpha
        y = h + 0.5 if a == 0.0 else (jax.nn.sigmoid(h) - a) / (1.0 - 2.0 * a)
        return jnp.clip(y, 0.0, 1.0)

    def _log_prob_with_noise(self, x: jax.Array, u: jax.Array | None, cond: jax.Array | None) -> jax.Array:
        if not self.is_image:
            z, log_det = self._to_latent(x, cond)
            return losses.log_standard_normal(z) + log_det
        y = (x * 255.0 + u) / _NUM_BINS_8BIT
        h, log_det_pre = self._preprocess(y)
        z, log_det = self._to_latent(h, cond)
        return (losses.log_standard_normal(z) + log_det + log_det_pre
                - self.num_dims * math.log(_NUM_BINS_8BIT))

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None) -> dict[str, jax.Array]:
        """One training pass: `{"log_prob": [B]}` with fresh dequantisation noise (images).

        Args:
          x: `[B, *input_shape]`; images as k/255 in [0, 1].
          rngs: the `sample` stream (or default) draws the noise.
          labels: `[B]` integers (conditional models only).
        """
        x = self._check_input(x)
        cond = self._cond(labels, x.shape[0])
        u = jax.random.uniform(rngs.sample(), x.shape) if self.is_image else None
        return {"log_prob": self._log_prob_with_noise(x, u, cond)}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`loss` (mean negative log-likelihood, nats) and `nll_bits_per_dim`."""
        nll = -jnp.mean(outputs["log_prob"])
        return {"loss": nll, "nll_bits_per_dim": nll / (self.num_dims * math.log(2.0))}

    # ------------------------------------------------------- likelihood API
    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, num_samples: int | None = None,
                 labels: jax.Array | None = None) -> jax.Array:
        """Exact log-likelihood in nats: `[B, *input_shape] -> [B]`.

        Vectors: the density. Images: log P of the 8-bit image under uniform
        dequantisation, log (1/K) sum_k p(y_k) / 256^D with K = `num_samples`
        (default 1) noise draws from `rngs`, or the bin centres without `rngs`.
        """
        x = self._check_input(x)
        cond = self._cond(labels, x.shape[0])
        if not self.is_image:
            return self._log_prob_with_noise(x, None, cond)
        if rngs is None:
            return self._log_prob_with_noise(x, jnp.full(x.shape, 0.5, jnp.float32), cond)
        k = 1 if num_samples is None else int(num_samples)
        if k < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        key = rngs.sample()
        # lax.map traces its body at an inner level, where NNX forbids writing
        # to this module's variables (ActNorm statistics): work on a copy.
        graphdef, state = nnx.split(self)

        def one(i):
            model = nnx.merge(graphdef, state, copy=True)
            return model._log_prob_with_noise(x, jax.random.uniform(jax.random.fold_in(key, i), x.shape), cond)

        log_p = jax.lax.map(one, jnp.arange(k))
        return jax.nn.logsumexp(log_p, axis=0) - math.log(k)

    # ----------------------------------------------------------- latent API
    def encode(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: jax.Array | None = None) -> jax.Array:
        """Data -> base space, f(x): `[B, *input_shape] -> [B, *input_shape]`.

        Images are dequantised at the bin centres, or with noise from `rngs`.
        """
        x = self._check_input(x)
        cond = self._cond(labels, x.shape[0])
        if self.is_image:
            u = jax.random.uniform(rngs.sample(), x.shape) if rngs is not None else jnp.full(x.shape, 0.5)
            x, _ = self._preprocess((x * 255.0 + u) / _NUM_BINS_8BIT)
        z, _ = self._to_latent(x, cond)
        return z.reshape(x.shape)

    def inverse(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: jax.Array | None = None) -> jax.Array:
        """The inverse of the generative map z -> x, i.e. `encode`."""
        return self.encode(x, rngs=rngs, labels=labels)

    def decode(self, z: jax.Array, *, labels: jax.Array | None = None) -> jax.Array:
        """Base space -> data, f^-1(z): `[B, *input_shape] -> [B, *input_shape]` (images in [0, 1])."""
        z = jnp.asarray(z, jnp.float32).reshape(-1, self.num_dims)
        h = self._from_latent(z, self._cond(labels, z.shape[0]))
        return self._postprocess(h) if self.is_image else h

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 temperature: float = 1.0) -> jax.Array:
        """Samples x = f^-1(temperature * z), z ~ N(0, I).

        Sample i's noise comes from `fold_in(key, i)`: the first k samples are
        the same whatever `n_samples` is.

        Returns:
          `[n_samples, *input_shape]`; images in [0, 1].
        """
        key = rngs.sample()
        z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (self.num_dims,)))(jnp.arange(n_samples))
        return self.decode(temperature * z, labels=labels).reshape(n_samples, *self.input_shape)

