"""Variational autoencoders: VAE, beta-VAE and the conditional VAE.

* "vae": Kingma & Welling 2013, "Auto-Encoding Variational Bayes"
  (arXiv:1312.6114). Gaussian encoder q(z|x) = N(mean, diag(exp(logvar))),
  prior N(0, I), decoder p(x|z) chosen by `reconstruction_loss` (see
  `likelihoods.py`). Trained on recon + beta * kl_weight * KL.
* "beta-vae": Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts
  with a Constrained Variational Framework" (ICLR); the same model, beta 4.
* "cvae": Sohn, Lee & Yan 2015, "Learning Structured Output Representation
  using Deep Conditional Generative Models" (NeurIPS): encoder and decoder
  both see a learned embedding of the class label; the prior stays N(0, I).

`log_prob` is the importance-weighted bound of Burda, Grosse & Salakhutdinov
2015 (arXiv:1509.00519); `elbo` is its one-sample case.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, PositiveFloat, PositiveInt

from workshop.core import losses
from workshop.core.configuration import ModelConfiguration
from workshop.core.device_manager import get_precision_policy
from workshop.core.registry import register_model, typed_parameters
from workshop.models.layers import (MLP, ConvDecoder, ConvEncoder, LabelEmbedding, Upsampling, class_labels,
                                    compiled_sampling,
                                    resolve_backbone)
from workshop.models.vae import likelihoods

__all__ = ["BetaVAEParameters", "CVAE", "CVAEParameters", "VAE", "VAEParameters"]

# Examples (batch x importance samples) decoded at once by log_prob: bounds
# memory, so k=1000 on a batch of 500 runs in chunks of 4 samples.
_IWAE_EXAMPLES_PER_CHUNK = 2048
_LABEL_FEATURES = 32


class VAEParameters(pydantic.BaseModel):
    """`parameters` of "vae"."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(1.0, ge=0.0, description="weight of the KL term (beta-VAE)")
    kl_weight: float = Field(1.0, ge=0.0, description="extra KL weight (annealing); KL is scaled by beta*kl_weight")
    reconstruction_loss: likelihoods.ReconstructionLoss = "bernoulli"
    decoder_std: PositiveFloat = Field(0.1, description="fixed std of the 'gaussian' decoder")
    iwae_samples: PositiveInt = Field(64, description="importance samples of log_prob by default")
    upsampling: Upsampling = Field("subpixel", description="conv decoder's 2x upsampling (layers.Upsample)")
    latent_channels: PositiveInt | None = Field(
        None, description="conv backbone: a spatial latent of this many channels per cell of the encoder's smallest "
                          "map (latent_dim unused), as the first stage of latent diffusion; None: a latent_dim vector")


class BetaVAEParameters(VAEParameters):
    """`parameters` of "beta-vae": the VAE's, with beta 4 by default."""

    beta: float = Field(4.0, ge=0.0, description="weight of the KL term (beta-VAE)")


class CVAEParameters(VAEParameters):
    """`parameters` of "cvae": the VAE's plus the number of classes."""

    num_classes: PositiveInt = Field(10, description="labels lie in [0, num_classes)")


@register_model("vae", family="vae", parameters=VAEParameters,
                description="Variational autoencoder (Kingma & Welling 2013)")
class VAE(nnx.Module):
    """Gaussian-latent VAE with an MLP or convolutional backbone.

    Args:
      config: `input_shape`, `latent_dim`, `encoder_features`,
        `decoder_features`, `backbone_type` and `parameters` (see
        `VAEParameters`) are used.
      rngs: `params` stream (or default) for the initialisers.
    """

    _schema: type[VAEParameters] = VAEParameters
    _conditional = False

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = typed_parameters(config.model_type, config.parameters, self._schema)
        self.model_type = config.model_type
        self.input_shape = tuple(int(s) for s in config.input_shape)
        self.latent_dim = int(config.latent_dim)
        self.latent_grid: tuple[int, ...] | None = None
        self.beta = float(p.beta)
        self.kl_weight = float(p.kl_weight)
        self.reconstruction = str(p.reconstruction_loss)
        # Burda et al. 2015: the importance-weighted bound, a lower bound on log p.
        self.likelihood_estimate = "importance-weighted bound"
        self.likelihood_data = likelihoods.data_description(self.reconstruction)
        self.decoder_std = float(p.decoder_std)
        self.iwae_samples = int(p.iwae_samples)
        self.backbone = resolve_backbone(config)
        label_features = 0
        if self._conditional:
            self.num_classes = int(p.num_classes)
            label_features = _LABEL_FEATURES
            self.label_embedding = LabelEmbedding(self.num_classes, label_features, rngs=rngs)
        k = likelihoods.params_per_pixel(self.reconstruction)
        dims = math.prod(self.input_shape)
        latent_in = self.latent_dim + label_features
        if p.latent_channels is not None and self.backbone != "conv":
            raise ValueError(f"model_type {self.model_type!r}: parameters.latent_channels needs the conv backbone, "
                             f"got backbone_type {self.backbone!r}")
        if self.backbone == "mlp":
            self.encoder = MLP(dims + label_features, config.encoder_features, 2 * self.latent_dim, rngs=rngs)
            self.encoder_head = None
            self.decoder = MLP(latent_in, config.decoder_features, dims * k, rngs=rngs)
        elif p.latent_channels is not None:
            if self._conditional:
                raise ValueError(f"model_type {self.model_type!r}: parameters.latent_channels (a spatial latent) is "
                                 "not supported with class labels; use 'vae' or 'beta-vae'")
            policy = get_precision_policy()
            self.encoder = ConvEncoder(self.input_shape, config.encoder_features, rngs=rngs)
            h, w, c = self.encoder.feature_shape
            self.latent_grid = (h, w, int(p.latent_channels))
            self.latent_dim = h * w * int(p.latent_channels)  # the flat size of the grid
            self.encoder_head = nnx.Conv(c, 2 * p.latent_channels, (1, 1), dtype=policy.compute_dtype,
                                         param_dtype=policy.param_dtype, rngs=rngs)
            self.decoder = ConvDecoder(self.input_shape, config.decoder_features, k, in_features=p.latent_channels,
                                       grid_input=True, upsampling=p.upsampling, rngs=rngs)
            if self.decoder.latent_grid_shape != (h, w):
                raise ValueError(
                    f"model_type {self.model_type!r} with latent_channels needs as many encoder as decoder stages so "
                    f"the latent grids match; got encoder_features={config.encoder_features}, "
                    f"decoder_features={config.decoder_features}")
        else:
            policy = get_precision_policy()
            self.encoder = ConvEncoder(self.input_shape, config.encoder_features, rngs=rngs)
            self.encoder_head = nnx.Linear(self.encoder.output_size + label_features, 2 * self.latent_dim,
                                           dtype=policy.compute_dtype, param_dtype=policy.param_dtype, rngs=rngs)
            self.decoder = ConvDecoder(self.input_shape, config.decoder_features, k, in_features=latent_in,
                                       upsampling=p.upsampling, rngs=rngs)
        self.params_per_pixel = k

    # ------------------------------------------------------------ internals
    def _labels(self, labels: Any, batch_size: int) -> jax.Array | None:
        return class_labels(labels, self.num_classes if self._conditional else None, batch_size,
                            model_name=f"model_type {self.model_type!r}", unconditional_hint="use 'cvae'")

    def _with_labels(self, h: jax.Array, labels: jax.Array | None) -> jax.Array:
        if labels is None:
            return h
        emb = self.label_embedding(labels)
        return jnp.concatenate([h.astype(emb.dtype), emb], axis=-1)

    def _posterior(self, x: jax.Array, labels: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        if self.backbone == "mlp":
            out = self.encoder(self._with_labels(x.reshape(x.shape[0], -1), labels))
        elif self.latent_grid is not None:  # [B, h, w, 2c] -> mean and logvar, each flattened to [B, h*w*c]
            mean, logvar = jnp.split(self.encoder_head(self.encoder.feature_map(x)).astype(jnp.float32), 2, axis=-1)
            return mean.reshape(x.shape[0], -1), logvar.reshape(x.shape[0], -1)
        else:
            out = self.encoder_head(self._with_labels(self.encoder(x), labels))
        out = out.astype(jnp.float32)
        return out[:, : self.latent_dim], out[:, self.latent_dim :]

    def _decoder_params(self, z: jax.Array, labels: jax.Array | None) -> jax.Array:
        if self.latent_grid is not None:
            z = z.reshape(z.shape[0], *self.latent_grid)
        out = self.decoder(self._with_labels(z, labels))
        return out.astype(jnp.float32).reshape(z.shape[0], *self.input_shape, self.params_per_pixel)

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None) -> dict[str, jax.Array]:
        """One reparameterised pass.

        Args:
          x: `[B, *input_shape]` in [0, 1].
          rngs: the `sample` stream (or default) draws the latent noise.
          labels: `[B]` integer classes (cvae only).

        Returns:
          `mean`, `logvar`, `z` `[B, latent_dim]` and `decoder_params`
          `[B, *input_shape, k]`, all float32.
        """
        labels = self._labels(labels, x.shape[0])
        mean, logvar = self._posterior(x, labels)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rngs.sample(), mean.shape)
        return {"mean": mean, "logvar": logvar, "z": z, "decoder_params": self._decoder_params(z, labels)}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Batch means of the training objective and its parts.

        Returns:
          `loss` = reconstruction_loss + beta * kl_weight * kl; `reconstruction_loss`
          (-log p(x|z), or the SSE for "mse"); `kl` (closed form, nats);
          `elbo` = -(reconstruction_loss + kl), the unweighted ELBO in nats (for
          "mse" the same expression, which is not a likelihood bound).
        """
        recon = likelihoods.reconstruction_loss(self.reconstruction, outputs["decoder_params"], batch["x"],
                                                decoder_std=self.decoder_std)
        kl = losses.kl_standard_normal(outputs["mean"], outputs["logvar"])
        return {
            "loss": jnp.mean(recon + self.beta * self.kl_weight * kl),
            "reconstruction_loss": jnp.mean(recon),
            "kl": jnp.mean(kl),
            "elbo": -jnp.mean(recon + kl),
        }

    # ----------------------------------------------------------- latent API
    def encode_distribution(self, x: jax.Array, *, labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """q(z|x): `[B, *input_shape] -> (mean, logvar)`, each `[B, latent_dim]`."""
        return self._posterior(x, self._labels(labels, x.shape[0]))

    def encode(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: jax.Array | None = None) -> jax.Array:
        """`[B, *input_shape] -> [B, latent_dim]`: the posterior mean, or a sample when `rngs` is given."""
        mean, logvar = self.encode_distribution(x, labels=labels)
        if rngs is None:
            return mean
        return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rngs.sample(), mean.shape)

    def decode(self, z: jax.Array, *, labels: jax.Array | None = None) -> jax.Array:
        """`[B, latent_dim] -> [B, *input_shape]`, the decoder's mean in [0, 1]."""
        params = self._decoder_params(z, self._labels(labels, z.shape[0]))
        return likelihoods.decoder_mean(self.reconstruction, params)

    # The `Autoencoder` protocol: continuous codes, the posterior mean.
    code_dtype = jnp.float32
    discrete_codes = False
    num_codes = None

    @property
    def code_shape(self) -> tuple[int, ...]:
        """`(latent_dim,)`, or `(h, w, latent_channels)` for a spatial latent."""
        return self.latent_grid if self.latent_grid is not None else (self.latent_dim,)

    def encode_codes(self, x: jax.Array) -> jax.Array:
        """The `Autoencoder` codes: `[B, *input_shape] -> [B, *code_shape]`, the posterior mean (float32)."""
        return self.encode(x).astype(jnp.float32).reshape(x.shape[0], *self.code_shape)

    def decode_codes(self, codes: jax.Array) -> jax.Array:
        """The `Autoencoder` decoder: `[B, *code_shape] -> [B, *input_shape]`, the decoder's mean."""
        return self.decode(codes.reshape(codes.shape[0], self.latent_dim))

    # The `AutoencoderLikelihood` protocol: q(z|x) and p(x|z) for bounds through the decoder.
    def sample_codes(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """z ~ q(z|x) and log q(z|x): `[B, *input_shape] -> ([B, *code_shape], [B])` (nats)."""
        mean, logvar = self.encode_distribution(x)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        return z.reshape(x.shape[0], *self.code_shape), losses.log_normal_diag(z, mean, logvar)

    def decoder_log_likelihood(self, x: jax.Array, codes: jax.Array) -> jax.Array:
        """log p(x | z): `([B, *input_shape], [B, *code_shape]) -> [B]` nats."""
        likelihoods.require_likelihood(self.reconstruction, self.model_type, "decoder_log_likelihood")
        params = self._decoder_params(codes.reshape(codes.shape[0], self.latent_dim), None)
        return likelihoods.log_likelihood(self.reconstruction, params, x, decoder_std=self.decoder_std)

    def reconstruct(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: jax.Array | None = None) -> jax.Array:
        """decode(encode(x)): `[B, *input_shape] -> [B, *input_shape]`."""
        return self.decode(self.encode(x, rngs=rngs, labels=labels), labels=labels)

    def interpolate(self, x_a: jax.Array, x_b: jax.Array, num_steps: int, *, labels: Any = None) -> jax.Array:
        """Decodes `num_steps` points on the line between the posterior means of two examples.

        Args:
          x_a: one end, `[*input_shape]` or `[1, *input_shape]`.
          x_b: the other end, shaped like `x_a`.
          num_steps: points including both ends.
          labels: one class label (cvae only), used for both ends and every step.

        Returns:
          `[num_steps, *input_shape]`.
        """
        x = jnp.concatenate([jnp.reshape(x_a, (1, *self.input_shape)), jnp.reshape(x_b, (1, *self.input_shape))])
        pair_labels = None if labels is None else jnp.broadcast_to(jnp.reshape(jnp.asarray(labels), (-1,))[:1], (2,))
        mean, _ = self.encode_distribution(x, labels=pair_labels)
        t = jnp.linspace(0.0, 1.0, num_steps)[:, None]
        z = (1.0 - t) * mean[0] + t * mean[1]
        step_labels = None if labels is None else jnp.broadcast_to(pair_labels[0], (num_steps,))
        return self.decode(z, labels=step_labels)

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 temperature: float = 1.0) -> jax.Array:
        """Ancestral samples: z ~ N(0, temperature^2 I), then the decoder's mean.

        Sample i's noise comes from `fold_in(key, i)`, so the first k samples
        are the same whatever `n_samples` is.

        Returns:
          `[n_samples, *input_shape]` in [0, 1].
        """
        key = rngs.sample()
        z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (self.latent_dim,)))(
            jnp.arange(n_samples)
        )
        return self.decode(temperature * z, labels=labels)

    # ------------------------------------------------------- likelihood API
    def log_importance_weights(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int,
                               labels: jax.Array | None = None) -> jax.Array:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k ~ q(z|x), k < num_samples.

        Sample k's noise comes from `fold_in(key, k)`; samples are decoded in
        chunks (`jax.lax.map`) so that memory stays bounded for large k.

        Returns:
          `[num_samples, B]` nats.
        """
        likelihoods.require_likelihood(self.reconstruction, self.model_type, "log_prob/elbo")
        labels = self._labels(labels, x.shape[0])
        mean, logvar = self._posterior(x, labels)
        key = rngs.sample()

        def one(k):
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(jax.random.fold_in(key, k), mean.shape)
            log_px = likelihoods.log_likelihood(self.reconstruction, self._decoder_params(z, labels), x,
                                                decoder_std=self.decoder_std)
            return log_px + losses.log_standard_normal(z) - losses.log_normal_diag(z, mean, logvar)

        chunk = max(1, min(num_samples, _IWAE_EXAMPLES_PER_CHUNK // max(1, x.shape[0])))
        return jax.lax.map(one, jnp.arange(num_samples), batch_size=chunk)

    def elbo(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None) -> jax.Array:
        """One-sample estimate of the ELBO, log p(x|z) + log p(z) - log q(z|x): `[B]` nats.

        Unbiased for the ELBO; exact when q(z|x) is the true posterior.
        """
        return self.log_importance_weights(x, rngs=rngs, num_samples=1, labels=labels)[0]

    def log_prob_and_elbo(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int | None = None,
                          labels: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """`log_prob` and the ELBO from the same k = `num_samples` importance samples: two `[B]` nats.

        The ELBO is the mean log weight, (1/k) sum_k log w_k, and `log_prob`
        their log-mean-exp, so log_prob >= ELBO for every example (Jensen),
        which independent draws do not guarantee.
        """
        k = self.iwae_samples if num_samples is None else int(num_samples)
        log_w = self.log_importance_weights(x, rngs=rngs, num_samples=k, labels=labels)
        return jax.nn.logsumexp(log_w, axis=0) - math.log(k), jnp.mean(log_w, axis=0)

    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int | None = None,
                 labels: jax.Array | None = None) -> jax.Array:
        """The importance-weighted bound of Burda et al. 2015 on log p(x).

        log (1/k) sum_k p(x, z_k) / q(z_k|x) with k = `num_samples` (default
        `iwae_samples`); a lower bound that tightens as k grows.

        Returns:
          `[B]` nats.
        """
        return self.log_prob_and_elbo(x, rngs=rngs, num_samples=num_samples, labels=labels)[0]


# beta-VAE is the same model with its own defaults.
register_model("beta-vae", family="vae", parameters=BetaVAEParameters,
               description="beta-VAE (Higgins et al. 2017): the VAE with beta=4 by default")(VAE)


@register_model("cvae", family="vae", parameters=CVAEParameters,
                description="Conditional VAE on class labels (Sohn et al. 2015)")
class CVAE(VAE):
    """The VAE with encoder and decoder conditioned on integer class labels.

    Every method takes `labels` (`[B]` integers in `[0, num_classes)`; a
    scalar is broadcast); leaving them out raises a ValueError. The attribute
    `num_classes` marks the model as conditional for the trainer.
    """

    _schema = CVAEParameters
    _conditional = True
