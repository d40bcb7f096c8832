"""Coupling layers: half of the elements, untouched, parameterise a map of the rest.

Dinh, Sohl-Dickstein & Bengio 2016, "Density estimation using Real NVP"
(arXiv:1605.08803), section 3: with a binary mask b, z = b*x + (1-b)*T(x; NN(b*x)),
a triangular Jacobian whose log-det is the sum of log T' over the
transformed elements. T is affine (Real NVP), additive (NICE, Dinh et al.
2014, arXiv:1410.8516; Glow's cheap option, Kingma & Dhariwal 2018,
arXiv:1807.03039) or a rational-quadratic spline (Durkan et al. 2019,
arXiv:1906.04032), see `elementwise.py`.

Masks (Real NVP section 3.4):

* "checkerboard": images alternate by pixel, (i + j + parity) % 2, shared over
  channels; vectors alternate by index.
* "channel": images split the channel axis in halves (needs C >= 2); vectors
  split the feature axis in halves.

The conditioner is a small CNN for images (3x3 conv, 1x1 layer as a matmul,
zero-initialised 3x3 conv, as in Glow) and an MLP for vectors; an optional
conditioning vector `cond` `[B, E]` enters every conditioner. Conditioners
follow the precision policy (their matmuls and convolutions run in the
compute dtype); their outputs are cast to float32, and the transform and
log-dets are float32 on purpose (`elementwise.py`, `spline.py`: the spline's
softmax bin normalisation and bin search would misplace knots in bfloat16).
"""

from __future__ import annotations

from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from workshop.core.device_manager import get_precision_policy
from workshop.models.flow import initializers
from workshop.models.flow.bijectors import Buffer
from workshop.models.flow.elementwise import check_transform, elementwise_transform, num_transform_params
from workshop.models.layers import MLP

__all__ = ["MASK_TYPES", "ConvConditioner", "Coupling", "MLPConditioner", "coupling_mask"]

MaskType = Literal["checkerboard", "channel"]
MASK_TYPES = ("checkerboard", "channel")


def coupling_mask(event_shape: Sequence[int], mask_type: str, parity: int = 0) -> jax.Array:
    """The binary mask of one coupling layer, 1 where elements are kept.

    Args:
      event_shape: `(H, W, C)` or `(D,)`.
      mask_type: "checkerboard" or "channel".
      parity: 0 or 1; 1 gives the complementary mask.

    Returns:
      `event_shape` float32.
    """
    event_shape = tuple(int(s) for s in event_shape)
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type {mask_type!r} is unknown; valid: {', '.join(MASK_TYPES)}")
    parity = int(parity) % 2
    if len(event_shape) == 3 and mask_type == "checkerboard":
        h, w, _ = event_shape
        ij = np.arange(h)[:, None] + np.arange(w)[None, :]
        mask = ((ij + parity) % 2 == 0)[:, :, None]
    else:
        n = event_shape[-1]
        if n < 2:
            raise ValueError(f"a {mask_type} coupling mask needs at least 2 features on the last axis, "
                             f"got event shape {event_shape}")
        idx = np.arange(n)
        keep = (idx % 2 == 0) if (mask_type == "checkerboard") else (idx < n // 2)
        mask = keep if parity == 0 else ~keep
    return jnp.asarray(np.broadcast_to(mask, event_shape).astype(np.float32))


class ConvConditioner(nnx.Module):
    """`[B, H, W, C_in] (+ cond [B, E]) -> [B, H, W, C_out]`; zero output at initialisation.

    Args:
      in_channels, out_channels: channel counts.
      hidden_channels: width of the hidden layers.
      cond_features: E, or 0 for none.
      rngs: `params` stream (or default).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int, cond_features: int = 0, *,
                 rngs: nnx.Rngs):
        policy = get_precision_policy()
        normal = initializers.lecun_normal(initializers.numpy_generator(rngs))
        kw = dict(dtype=policy.compute_dtype, param_dtype=policy.param_dtype, bias_init=initializers.zeros, rngs=rngs)
        self.conv_in = nnx.Conv(in_channels, hidden_channels, (3, 3), padding="SAME", kernel_init=normal, **kw)
        # A 1x1 convolution is a matmul over channels; written as one because
        # XLA's CPU matmuls run far faster than its convolutions.
        self.hidden = nnx.Linear(hidden_channels, hidden_channels, kernel_init=normal, **kw)
        self.conv_out = nnx.Conv(hidden_channels, out_channels, (3, 3), padding="SAME",
                                 kernel_init=initializers.zeros, **kw)
        self.cond_proj = (nnx.Linear(cond_features, hidden_channels, kernel_init=normal, **kw)
                          if cond_features else None)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        # The layers cast their inputs to their own dtype (the policy's, or apply_compute_dtype's).
        h = self.conv_in(x)
        if self.cond_proj is not None and cond is not None:
            h = h + self.cond_proj(cond)[:, None, None, :]
        h = nnx.relu(h)
        h = nnx.relu(self.hidden(h))
        return self.conv_out(h).astype(jnp.float32)


class MLPConditioner(nnx.Module):
    """`[B, D_in] (+ cond [B, E]) -> [B, D_out]`; zero output at initialisation."""

    def __init__(self, in_features: int, out_features: int, hidden_features: Sequence[int],
                 cond_features: int = 0, *, rngs: nnx.Rngs):
        self.net = MLP(in_features + cond_features, hidden_features, out_features, activation=nnx.relu, rngs=rngs)
        last = self.net.layers[-1]
        last.kernel[...] = jnp.zeros_like(last.kernel[...])
        self.cond_features = int(cond_features)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None) -> jax.Array:
        if self.cond_features:
            if cond is None:
                raise ValueError("this conditioner was built for a conditioning input; pass cond")
            x = jnp.concatenate([x.astype(cond.dtype), cond], axis=-1)
        return self.net(x).astype(jnp.float32)


class Coupling(nnx.Module):
    """A masked coupling layer (bijector; see `bijectors.py` for the convention).

    Args:
      event_shape: `(H, W, C)` or `(D,)`.
      mask_type: "checkerboard" or "channel".
      parity: 0 or 1 (the complementary mask).
      transform: "affine", "additive" or "spline".
      hidden_channels: conditioner width for images.
      hidden_features: conditioner MLP widths for vectors.
      cond_features: E of the conditioning input, 0 for none.
      num_bins: the spline's number of bins.
      tail_bound: the spline's interval `[-B, B]` bound B.
      rngs: `params` stream (or default).
    """

    def __init__(self, event_shape: Sequence[int], mask_type: str = "checkerboard", parity: int = 0,
                 transform: str = "affine", *, hidden_channels: int = 64, hidden_features: Sequence[int] = (64, 64),
                 cond_features: int = 0, num_bins: int = 8, tail_bound: float = 3.0, rngs: nnx.Rngs):
        self.event_shape = tuple(int(s) for s in event_shape)
        self.transform = check_transform(transform, what="coupling transform")
        self.tail_bound = float(tail_bound)
        self.mask = Buffer(coupling_mask(self.event_shape, mask_type, parity))
        self.num_params = num_transform_params(transform, num_bins)
        if len(self.event_shape) == 3:
            c = self.event_shape[-1]
            # The mask goes in as an extra channel: the net can tell a masked pixel from a black one.
            self.conditioner = ConvConditioner(c + 1, c * self.num_params, hidden_channels, cond_features, rngs=rngs)
        else:
            d = self.event_shape[0]
            self.conditioner = MLPConditioner(d, d * self.num_params, hidden_features, cond_features, rngs=rngs)

    def _params(self, kept: jax.Array, cond: jax.Array | None) -> jax.Array:
        b = kept.shape[0]
        if len(self.event_shape) == 3:
            mask_channel = jnp.broadcast_to(self.mask[...][..., :1], (b, *self.event_shape[:2], 1))
            out = self.conditioner(jnp.concatenate([kept, mask_channel], axis=-1), cond)
        else:
            out = self.conditioner(kept, cond)
        return out.reshape(b, *self.event_shape, self.num_params)

    def _apply(self, x: jax.Array, cond: jax.Array | None, inverse: bool) -> tuple[jax.Array, jax.Array]:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"coupling layer built for event shape {self.event_shape} got input {tuple(x.shape)}")
        x = x.astype(jnp.float32)
        mask = self.mask[...]
        kept = x * mask
        y, log_det = elementwise_transform(self.transform, x, self._params(kept, cond), inverse=inverse,
                                           tail_bound=self.tail_bound)
        out = kept + (1.0 - mask) * y
        return out, jnp.sum(((1.0 - mask) * log_det).reshape(x.shape[0], -1), axis=-1)

    def forward(self, x: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self._apply(x, cond, inverse=False)

    def inverse(self, z: jax.Array, *, cond: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self._apply(z, cond, inverse=True)

