"""VQ-VAE: an autoencoder with a discrete latent grid.

van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete Representation
Learning" (arXiv:1711.00937). The encoder maps x to a grid of vectors z_e of
size `latent_dim` (one per cell of the smallest feature map for the conv
backbone, `num_latents` of them for the mlp backbone); `VectorQuantizer`
replaces each by its nearest code; the decoder maps the codes back to p(x|z_q).

The loss is -log p(x|z_q) + codebook loss (unless the codebook follows EMA
updates) + commitment_cost * commitment loss. With the paper's uniform prior
over K codes, the one-hot posterior gives KL = num_latents * log K, a
constant, so log p(x) >= log p(x|z_q) - num_latents * log K: that is `elbo`
and `log_prob`. Samples from `generate` draw codes from that uniform prior and
look like noise: good samples need a learned prior over the codes (the paper
fits a PixelCNN to them), which belongs to the autoregressive family.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt

from workshop.core.configuration import ModelConfiguration
from workshop.core.device_manager import get_precision_policy
from workshop.core.registry import register_model, typed_parameters
from workshop.models.layers import MLP, ConvDecoder, ConvEncoder, Upsampling, compiled_sampling, resolve_backbone
from workshop.models.vae import likelihoods
from workshop.models.vae.vector_quantizer import VectorQuantizer

__all__ = ["VQVAE", "VQVAEParameters"]

_DEFAULT_MLP_LATENTS = 8


class VQVAEParameters(pydantic.BaseModel):
    """`parameters` of "vqvae"."""

    model_config = ConfigDict(extra="forbid")

    num_embeddings: PositiveInt = Field(512, description="K, the codebook size")
    commitment_cost: float = Field(0.25, ge=0.0, description="beta of the commitment loss")
    ema_decay: float | None = Field(0.99, gt=0.0, lt=1.0, description="EMA codebook updates; None: codebook loss")
    reconstruction_loss: likelihoods.ReconstructionLoss = "discretized_logistic"
    decoder_std: PositiveFloat = Field(0.1, description="fixed std of the 'gaussian' decoder")
    num_latents: PositiveInt | None = Field(
        None, description=f"mlp backbone: code vectors per example (default {_DEFAULT_MLP_LATENTS}); conv: unused"
    )
    upsampling: Upsampling = Field("subpixel", description="conv decoder's 2x upsampling (layers.Upsample)")


@register_model("vqvae", family="vae", parameters=VQVAEParameters,
                description="Vector-quantised VAE (van den Oord et al. 2017)")
class VQVAE(nnx.Module):
    """VQ-VAE with an MLP or convolutional backbone.

    Args:
      config: `input_shape`, `latent_dim` (code size D), `encoder_features`,
        `decoder_features` (the conv backbone needs as many of each),
        `backbone_type` and `parameters` (see `VQVAEParameters`).
      rngs: `params` stream (or default) for the initialisers.
    """

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = typed_parameters(config.model_type, config.parameters, VQVAEParameters)
        self.model_type = config.model_type
        self.input_shape = tuple(int(s) for s in config.input_shape)
        self.latent_dim = int(config.latent_dim)
        self.reconstruction = str(p.reconstruction_loss)
        # A deterministic posterior: log_prob is the ELBO itself.
        self.likelihood_estimate = "variational bound"
        self.likelihood_data = likelihoods.data_description(self.reconstruction)
        self.decoder_std = float(p.decoder_std)
        self.backbone = resolve_backbone(config)
        k = likelihoods.params_per_pixel(self.reconstruction)
        dims = math.prod(self.input_shape)
        if self.backbone == "conv":
            if p.num_latents is not None:
                raise ValueError("vqvae: num_latents applies to the mlp backbone; the conv backbone has one code "
                                 "per cell of the encoder's smallest feature map")
            if len(config.encoder_features) != len(config.decoder_features):
                raise ValueError(
                    f"vqvae with the conv backbone needs as many encoder as decoder stages so the latent grids "
                    f"match; got encoder_features={config.encoder_features}, "
                    f"decoder_features={config.decoder_features}"
                )
            policy = get_precision_policy()
            self.encoder = ConvEncoder(self.input_shape, config.encoder_features, rngs=rngs)
            self.pre_quantization = nnx.Conv(self.encoder.feature_shape[-1], self.latent_dim, (1, 1),
                                             dtype=policy.compute_dtype, param_dtype=policy.param_dtype, rngs=rngs)
            self.decoder = ConvDecoder(self.input_shape, config.decoder_features, k, in_features=self.latent_dim,
                                       grid_input=True, upsampling=p.upsampling, rngs=rngs)
            self.latent_shape = tuple(self.encoder.feature_shape[:2])
        else:
            num = int(p.num_latents or _DEFAULT_MLP_LATENTS)
            self.encoder = MLP(dims, config.encoder_features, num * self.latent_dim, rngs=rngs)
            self.pre_quantization = None
            self.decoder = MLP(num * self.latent_dim, config.decoder_features, dims * k, rngs=rngs)
            self.latent_shape = (num,)
        self.num_latents = math.prod(self.latent_shape)
        self.num_embeddings = int(p.num_embeddings)
        self.quantizer = VectorQuantizer(self.num_embeddings, self.latent_dim, commitment_cost=p.commitment_cost,
                                         ema_decay=p.ema_decay, rngs=rngs)
        self.params_per_pixel = k

    # ------------------------------------------------------------ internals
    def _no_labels(self, labels: Any) -> None:
        if labels is not None:
            raise ValueError(f"model_type {self.model_type!r} is unconditional and takes no labels")

    def _encode_continuous(self, x: jax.Array) -> jax.Array:
        if self.backbone == "conv":
            z_e = self.pre_quantization(self.encoder.feature_map(x))
        else:
            z_e = self.encoder(x.reshape(x.shape[0], -1)).reshape(x.shape[0], *self.latent_shape, self.latent_dim)
        return z_e.astype(jnp.float32)

    def _decoder_params(self, z_q: jax.Array) -> jax.Array:
        h = z_q if self.backbone == "conv" else z_q.reshape(z_q.shape[0], -1)
        out = self.decoder(h)
        return out.astype(jnp.float32).reshape(z_q.shape[0], *self.input_shape, self.params_per_pixel)

    def _log_prior(self) -> float:
        return self.num_latents * math.log(self.num_embeddings)

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: Any = None) -> dict[str, jax.Array]:
        """Encode, quantise (updating the EMA codebook in training mode), decode.

        Args:
          x: `[B, *input_shape]` in [0, 1].
          rngs: unused (the model is deterministic); accepted for the protocol.

        Returns:
          `z_e`, `quantized` `[B, *latent_shape, D]`, `indices` `[B, *latent_shape]`,
          `decoder_params` `[B, *input_shape, k]`, `codebook_loss`,
          `commitment_loss`, `vq_loss` `[B]` and `perplexity` (scalar).
        """
        self._no_labels(labels)
        z_e = self._encode_continuous(x)
        vq = self.quantizer(z_e)
        return {
            "z_e": z_e,
            "quantized": vq["quantized"],
            "indices": vq["indices"],
            "decoder_params": self._decoder_params(vq["quantized"]),
            "codebook_loss": vq["codebook_loss"],
            "commitment_loss": vq["commitment_loss"],
            "vq_loss": vq["loss"],
            "perplexity": vq["perplexity"],
        }

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Batch means: `loss` = reconstruction_loss + vq loss; `kl` = num_latents * log K
        (uniform prior); `elbo` = -reconstruction_loss - kl; `codebook_loss`,
        `commitment_loss` and the codebook `perplexity`."""
        recon = likelihoods.reconstruction_loss(self.reconstruction, outputs["decoder_params"], batch["x"],
                                                decoder_std=self.decoder_std)
        kl = jnp.float32(self._log_prior())
        return {
            "loss": jnp.mean(recon + outputs["vq_loss"]),
            "reconstruction_loss": jnp.mean(recon),
            "kl": kl,
            "elbo": -jnp.mean(recon) - kl,
            "codebook_loss": jnp.mean(outputs["codebook_loss"]),
            "commitment_loss": jnp.mean(outputs["commitment_loss"]),
            "perplexity": outputs["perplexity"],
        }

    # ----------------------------------------------------------- latent API
    def encode(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """`[B, *input_shape] -> [B, *latent_shape, D]`: the quantised codes (no EMA update)."""
        return self.quantizer.lookup(self.encode_codes(x))

    # The `Autoencoder` protocol: discrete codes, one index per latent cell.
    code_dtype = jnp.int32
    discrete_codes = True

    @property
    def code_shape(self) -> tuple[int, ...]:
        return self.latent_shape

    @property
    def num_codes(self) -> int:
        return self.num_embeddings

    def encode_codes(self, x: jax.Array) -> jax.Array:
        """`[B, *input_shape] -> [B, *latent_shape]` code indices."""
        return self.quantizer.nearest_codes(self._encode_continuous(x))

    # The `AutoencoderLikelihood` protocol: the posterior is one-hot (log q = 0).
    def sample_codes(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The nearest codes and log q(codes|x) = 0: `[B, *input_shape] -> ([B, *latent_shape], [B])`."""
        del key  # the posterior is deterministic
        return self.encode_codes(x), jnp.zeros((x.shape[0],), jnp.float32)

    def decoder_log_likelihood(self, x: jax.Array, codes: jax.Array) -> jax.Array:
        """log p(x | z_q(codes)): `([B, *input_shape], [B, *latent_shape]) -> [B]` nats."""
        likelihoods.require_likelihood(self.reconstruction, self.model_type, "decoder_log_likelihood")
        return likelihoods.log_likelihood(self.reconstruction, self._decoder_params(self.quantizer.lookup(codes)), x,
                                          decoder_std=self.decoder_std)

    def decode(self, z: jax.Array) -> jax.Array:
        """`[B, *latent_shape, D] -> [B, *input_shape]`, the decoder's mean in [0, 1]."""
        return likelihoods.decoder_mean(self.reconstruction, self._decoder_params(z.astype(jnp.float32)))

    def decode_codes(self, indices: jax.Array) -> jax.Array:
        """`[B, *latent_shape]` code indices `-> [B, *input_shape]`."""
        return self.decode(self.quantizer.lookup(indices))

    def reconstruct(self, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
        """decode(encode(x)): `[B, *input_shape] -> [B, *input_shape]`."""
        return self.decode(self.encode(x))

    def interpolate(self, x_a: jax.Array, x_b: jax.Array, num_steps: int) -> jax.Array:
        """Quantises and decodes `num_steps` points on the line between z_e(x_a) and z_e(x_b).

        Args:
          x_a: one end, `[*input_shape]` or `[1, *input_shape]`.
          x_b: the other end, shaped like `x_a`.

        Returns:
          `[num_steps, *input_shape]`.
        """
        x = jnp.concatenate([jnp.reshape(x_a, (1, *self.input_shape)), jnp.reshape(x_b, (1, *self.input_shape))])
        z_e = self._encode_continuous(x)
        t = jnp.linspace(0.0, 1.0, num_steps).reshape(num_steps, *([1] * (z_e.ndim - 1)))
        path = (1.0 - t) * z_e[0] + t * z_e[1]
        return self.decode_codes(self.quantizer.nearest_codes(path))

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: Any = None, temperature: float = 1.0) -> jax.Array:
        """Decodes codes drawn from the uniform prior the model is trained with.

        Sample i's codes come from `fold_in(key, i)`. `temperature` has no
        effect (a uniform prior has none); a learned prior over codes is what
        makes good samples.

        Returns:
          `[n_samples, *input_shape]` in [0, 1].
        """
        self._no_labels(labels)
        key = rngs.sample()
        draw = lambda i: jax.random.randint(jax.random.fold_in(key, i), self.latent_shape, 0, self.num_embeddings)  # noqa: E731
        return self.decode_codes(jax.vmap(draw)(jnp.arange(n_samples)))

    # ------------------------------------------------------- likelihood API
    def elbo(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: Any = None) -> jax.Array:
        """log p(x|z_q(x)) - num_latents * log K: `[B]` nats (deterministic)."""
        self._no_labels(labels)
        likelihoods.require_likelihood(self.reconstruction, self.model_type, "log_prob/elbo")
        z_e = self._encode_continuous(x)
        quantized = self.quantizer.lookup(self.quantizer.nearest_codes(z_e))
        log_px = likelihoods.log_likelihood(self.reconstruction, self._decoder_params(quantized), x,
                                            decoder_std=self.decoder_std)
        return log_px - self._log_prior()

    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, num_samples: int | None = None,
                 labels: Any = None) -> jax.Array:
        """The ELBO with the uniform prior (the posterior is deterministic, so
        importance sampling cannot tighten it; `num_samples` is ignored): `[B]` nats."""
        return self.elbo(x, rngs=rngs, labels=labels)
