"""Vector quantisation with a straight-through gradient (VQ-VAE's bottleneck).

van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation
Learning" (arXiv:1711.00937): each encoder output vector z_e is replaced by
its nearest codebook vector e_k; gradients pass straight through
(z_e + stop_gradient(e_k - z_e)). The codebook learns either

* by the codebook loss ||sg[z_e] - e||^2 (`ema_decay=None`; the codebook is an
  `nnx.Param`), or
* by exponential moving averages of the cluster sizes N_k and of the sums of
  the vectors assigned to each code m_k, e_k = m_k / N_k, with Laplace
  smoothing of N_k (the paper's appendix A.1; Razavi, van den Oord & Vinyals
  2019, arXiv:1906.00446). The codebook and the statistics are then
  `CodebookEMA` variables: not `nnx.Param`, so no optimizer touches them.

Both add the commitment loss beta ||z_e - sg[e]||^2. Following Flax's
BatchNorm, `use_running_average=False` (training, `model.train()`) updates the
EMA statistics in `__call__`; True (`model.eval()`) leaves them alone.
Losses are squared L2 norms summed over each example's latent vectors.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.core import losses
from workshop.core.device_manager import get_precision_policy, keep_float32

__all__ = ["CodebookEMA", "VectorQuantizer", "codebook_perplexity"]

# Nearest-code search and the EMA sums run in float32 under any precision policy (`keep_float32`
# scopes), and not in TF32 on GPUs: |z|^2 - 2 z.e + |e|^2 cancels, and bfloat16 rounding would
# pick the wrong code; the EMA sums accumulate over the whole batch.
_HIGHEST = jax.lax.Precision.HIGHEST


class CodebookEMA(nnx.Variable):
    """Codebook state updated by moving averages in the forward pass, never by gradients."""


def codebook_perplexity(encodings: jax.Array) -> jax.Array:
    """exp(entropy) of the average code usage; K when all K codes are used equally.

    Args:
      encodings: `[N, K]` one-hot assignments.

    Returns:
      scalar float32.
    """
    probs = jnp.mean(encodings.astype(jnp.float32), axis=0)
    return jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10)))


class VectorQuantizer(nnx.Module):
    """Nearest-neighbour quantiser over a codebook of `num_embeddings` vectors.

    Args:
      num_embeddings: K, the number of codes.
      embedding_dim: D, the size of each code (the encoder's last axis).
      commitment_cost: beta, the weight of the commitment loss.
      ema_decay: decay of the EMA codebook updates, or None to learn the
        codebook by gradient through the codebook loss.
      epsilon: Laplace smoothing of the EMA cluster sizes.
      use_running_average: True freezes the EMA statistics (`model.eval()`).
      rngs: `params` stream (or default) for the codebook's initialisation.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        commitment_cost: float = 0.25,
        ema_decay: float | None = 0.99,
        epsilon: float = 1e-5,
        use_running_average: bool = False,
        rngs: nnx.Rngs,
    ):
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in (0, 1) or be None, got {ema_decay}")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        self.commitment_cost = float(commitment_cost)
        self.ema_decay = None if ema_decay is None else float(ema_decay)
        self.epsilon = float(epsilon)
        self.use_running_average = bool(use_running_average)
        # Uniform with variance 1/D (lecun_uniform): codes start on the scale of unit-variance inputs.
        limit = math.sqrt(3.0 / self.embedding_dim)
        init = jax.random.uniform(rngs.params(), (self.num_embeddings, self.embedding_dim),
                                  get_precision_policy().param_dtype, -limit, limit)
        if self.ema_decay is None:
            self.codebook = nnx.Param(init)
        else:
            self.codebook = CodebookEMA(init)
            self.ema_cluster_size = CodebookEMA(jnp.zeros((self.num_embeddings,), init.dtype))
            self.ema_embedding_sum = CodebookEMA(jnp.array(init))

    def nearest_codes(self, z_e: jax.Array) -> jax.Array:
        """Index of the nearest code: `[..., D] -> [...]` int32."""
        flat = z_e.reshape(-1, self.embedding_dim).astype(jnp.float32)
        codebook = self.codebook[...].astype(jnp.float32)
        with keep_float32("vq_code_distances"):
            distances = (
                jnp.sum(flat**2, axis=1, keepdims=True)
                - 2.0 * jnp.matmul(flat, codebook.T, precision=_HIGHEST)
                + jnp.sum(codebook**2, axis=1)
            )
        return jnp.argmin(distances, axis=1).astype(jnp.int32).reshape(z_e.shape[:-1])

    def lookup(self, indices: jax.Array) -> jax.Array:
        """Code vectors of `indices`: `[...] -> [..., D]` float32."""
        return jnp.take(self.codebook[...].astype(jnp.float32), indices, axis=0)

    def __call__(self, z_e: jax.Array, *, use_running_average: bool | None = None) -> dict[str, jax.Array]:
        """Quantises `z_e` and, in training mode with EMA, updates the codebook.

        The outputs use the codebook from before this call's update.

        Args:
          z_e: `[B, ..., D]` encoder outputs.
          use_running_average: overrides the attribute of the same name.

        Returns:
          `quantized` `[B, ..., D]` (straight-through), `indices` `[B, ...]`,
          `codebook_loss`, `commitment_loss` and `loss` (codebook loss unless
          EMA, plus commitment_cost * commitment loss) `[B]`, `perplexity` scalar.
        """
        frozen = self.use_running_average if use_running_average is None else use_running_average
        z_e = z_e.astype(jnp.float32)
        indices = self.nearest_codes(z_e)
        quantized = self.lookup(indices)
        codebook_loss = losses.squared_error(jax.lax.stop_gradient(z_e), quantized)
        commitment_loss = losses.squared_error(z_e, jax.lax.stop_gradient(quantized))
        loss = self.commitment_cost * commitment_loss
        if self.ema_decay is None:
            loss = loss + codebook_loss
        encodings = jax.nn.one_hot(indices.reshape(-1), self.num_embeddings, dtype=jnp.float32)
        if self.ema_decay is not None and not frozen:
            self._ema_update(jax.lax.stop_gradient(z_e).reshape(-1, self.embedding_dim), encodings)
        return {
            "quantized": z_e + jax.lax.stop_gradient(quantized - z_e),
            "indices": indices,
            "codebook_loss": codebook_loss,
            "commitment_loss": commitment_loss,
            "loss": loss,
            "perplexity": codebook_perplexity(encodings),
        }

    def _ema_update(self, flat: jax.Array, encodings: jax.Array) -> None:
        """N_k <- d N_k + (1-d) n_k; m_k <- d m_k + (1-d) sum of z_e assigned to k; e_k = m_k / smoothed N_k."""
        decay = self.ema_decay
        cluster_size = decay * self.ema_cluster_size[...] + (1.0 - decay) * jnp.sum(encodings, axis=0)
        with keep_float32("vq_ema_sums"):
            sums = jnp.matmul(encodings.T, flat.astype(jnp.float32), precision=_HIGHEST)
        embedding_sum = decay * self.ema_embedding_sum[...] + (1.0 - decay) * sums
        total = jnp.sum(cluster_size)
        # Laplace smoothing keeps unused codes from dividing by zero.
        smoothed = (cluster_size + self.epsilon) / (total + self.num_embeddings * self.epsilon) * total
        self.ema_cluster_size[...] = cluster_size
        self.ema_embedding_sum[...] = embedding_sum
        self.codebook[...] = (embedding_sum / smoothed[:, None]).astype(self.codebook[...].dtype)
