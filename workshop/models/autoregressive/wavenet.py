"""WaveNet: dilated causal convolutions over mu-law audio, with fast cached generation.

van den Oord et al. 2016, "WaveNet: A Generative Model for Raw Audio"
(arXiv:1609.03499): a stack of kernel-2 causal convolutions with dilations
1, 2, ..., 2^(layers_per_block - 1), repeated `num_blocks` times; gated
activations tanh * sigmoid; residual and skip connections; a 256-way softmax
over mu-law codes; optional global conditioning (a class label, as a learned
bias in every gate).

Fast generation follows Paine et al. 2016, "Fast Wavenet Generation
Algorithm" (arXiv:1611.09482): each layer keeps a queue of its last
`dilation` inputs, so a new sample costs one position per layer instead of
the whole receptive field. `generate(..., fast=False)` reruns the full network
each step; both give the same samples for the same key. `generate(prompt=...)`
continues given audio: the loop feeds the prompt's codes through the queues,
keeping them, then samples the rest.

Data: `input_shape=(T,)`. With `input_format="mu_law_codes"` the inputs are
integer codes `[B, T]` in `[0, num_levels)` and `generate` returns codes; with
"waveform" they are floats in [-1, 1], encoded with mu-law inside the model,
and `generate` returns decoded waveforms.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
from flax import nnx
from pydantic import ConfigDict, Field, PositiveInt

from workshop.core.configuration import ModelConfiguration
from workshop.core.device_manager import get_precision_policy
from workshop.core.registry import register_model
from workshop.models.autoregressive import quantization
from workshop.models.autoregressive.masked_conv import gate
from workshop.models.autoregressive.sampling import broadcast_prompt, check_sampling_settings, prompted_draw
from workshop.models.layers.embedding import LabelEmbedding, class_labels
from workshop.models.layers.compiled_sampling import compiled_sampling

__all__ = ["WaveNet", "WaveNetParameters"]


class WaveNetParameters(pydantic.BaseModel):
    """`parameters` of "wavenet"."""

    model_config = ConfigDict(extra="forbid")

    num_levels: int = Field(256, ge=2, description="mu-law codes (mu = num_levels - 1)")
    input_format: Literal["mu_law_codes", "waveform"] = "mu_law_codes"
    num_blocks: PositiveInt = Field(2, description="repetitions of the dilation cycle")
    layers_per_block: PositiveInt = Field(8, description="dilations 1, 2, ..., 2^(layers_per_block-1)")
    residual_channels: PositiveInt = 32
    dilation_channels: PositiveInt = 32
    skip_channels: PositiveInt = 64
    num_classes: PositiveInt | None = Field(None, description="globally conditioned on a class label when set")


class _ResidualLayer(nnx.Module):
    """Dilated causal conv (kernel 2) -> gate -> residual and skip 1x1 convs."""

    def __init__(self, dilation: int, residual: int, gate_ch: int, skip: int, *, rngs: nnx.Rngs):
        policy = get_precision_policy()
        kw = {"dtype": policy.compute_dtype, "param_dtype": policy.param_dtype, "rngs": rngs}
        self.dilation = dilation
        self.conv = nnx.Conv(residual, 2 * gate_ch, (2,), kernel_dilation=(dilation,), padding=((dilation, 0),), **kw)
        self.residual = nnx.Linear(gate_ch, residual, **kw)
        self.skip = nnx.Linear(gate_ch, skip, **kw)

    def _finish(self, h, pre, cond):
        if cond is not None:
            pre = pre + cond[:, None, :].astype(pre.dtype)
        z = gate(pre)
        return h + self.residual(z), self.skip(z)

    def __call__(self, h: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """`[B, T, R]` -> (`[B, T, R]` residual output, `[B, T, S]` skip)."""
        return self._finish(h, self.conv(h), cond)

    def step(self, h: jax.Array, past: jax.Array, cond: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """One position: `h` `[B, 1, R]` now, `past` `[B, 1, R]` the input `dilation` steps ago."""
        kernel = self.conv.kernel[...].astype(h.dtype)  # [2, R, 2G]: tap 0 is t - dilation, tap 1 is t
        pre = past @ kernel[0] + h @ kernel[1] + self.conv.bias[...].astype(h.dtype)
        return self._finish(h, pre, cond)


@register_model("wavenet", family="autoregressive", parameters=WaveNetParameters,
                description="WaveNet (van den Oord et al. 2016) with fast cached generation (Paine et al. 2016)")
class WaveNet(nnx.Module):
    """WaveNet over sequences of `config.input_shape` `(T,)` (see the module docstring).

    Args:
      config: `input_shape` and `parameters` (see `WaveNetParameters`).
      rngs: `params` stream (or default).
    """

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = WaveNetParameters.model_validate(config.parameters)
        self.input_shape = tuple(int(s) for s in config.input_shape)
        if len(self.input_shape) != 1:
            raise ValueError(f"wavenet takes input_shape (T,), got {self.input_shape}")
        policy = get_precision_policy()
        kw = {"dtype": policy.compute_dtype, "param_dtype": policy.param_dtype, "rngs": rngs}
        self.num_levels = int(p.num_levels)
        self.likelihood_estimate = "exact"
        self.likelihood_data = f"discrete values, {self.num_levels} levels each: the probability mass"
        self.waveform = p.input_format == "waveform"
        self.embed = nnx.Embed(self.num_levels, p.residual_channels, **kw)
        self.start = nnx.Param(jax.random.normal(rngs.params(), (p.residual_channels,), policy.param_dtype) * 0.02)
        dilations = [2**i for _ in range(p.num_blocks) for i in range(p.layers_per_block)]
        self.layers = nnx.List([
            _ResidualLayer(d, p.residual_channels, p.dilation_channels, p.skip_channels, rngs=rngs) for d in dilations
        ])
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)
            self.label_embeddings = nnx.List(
                [LabelEmbedding(self.num_classes, 2 * p.dilation_channels, rngs=rngs) for _ in dilations]
            )
        self.out_hidden = nnx.Linear(p.skip_channels, p.skip_channels, **kw)
        self.out = nnx.Linear(p.skip_channels, self.num_levels, **kw)
        self.receptive_field = 1 + sum(dilations)

    # ------------------------------------------------------------ internals
    def _labels(self, labels, batch_size: int) -> jax.Array | None:
        return class_labels(labels, getattr(self, "num_classes", None), batch_size, model_name="wavenet",
                            unconditional_hint="set parameters.num_classes")

    def codes(self, x: jax.Array) -> jax.Array:
        """Inputs `[B, T]` -> int32 mu-law codes, checked (errors name the bad value)."""
        x = jnp.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"wavenet expects sequences [B, T], got shape {tuple(x.shape)}")
        if not self.waveform:
            return quantization.check_tokens(x, self.num_levels, model_name="wavenet mu-law codes")
        if not isinstance(x, jax.core.Tracer):
            values = jnp.abs(x)
            if float(values.max()) > 1.0:
                idx = tuple(int(i) for i in jnp.argwhere(values > 1.0)[0])
                raise ValueError(f"wavenet waveform values must lie in [-1, 1]; got {float(x[idx])} at index {idx}")
        return quantization.mu_law_encode(x, self.num_levels)

    def check_inputs(self, x) -> None:
        """Checks a whole host data array `[N, T]` (e.g. the training set) before training.

        mu-law codes must be integers in `[0, num_levels)`; waveforms floats in
        [-1, 1]. Raises a ValueError naming the first bad value and its index.
        """
        if not self.waveform:
            quantization.check_token_array(x, self.num_levels, model_name="wavenet mu-law codes")
            return
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"wavenet expects sequences [N, T], got shape {x.shape}")
        bad = ~(np.abs(x) <= 1.0)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"wavenet waveform values must lie in [-1, 1]; got {float(x[idx])} at index {idx}")

    def _conditions(self, labels):
        if labels is None:
            return [None] * len(self.layers)
        return [emb(labels) for emb in self.label_embeddings]

    def _logits(self, skip_sum: jax.Array) -> jax.Array:
        return self.out(jax.nn.relu(self.out_hidden(jax.nn.relu(skip_sum)))).astype(jnp.float32)

    def embed_inputs(self, codes: jax.Array) -> jax.Array:
        """`[B, T]` codes -> `[B, T, R]`: the start vector, then codes 0..T-2 (shifted right)."""
        start = jnp.broadcast_to(self.start[...], (codes.shape[0], 1, self.start.shape[0]))
        return jnp.concatenate([start.astype(self.embed.dtype or jnp.float32), self.embed(codes[:, :-1])], axis=1)

    def network(self, h: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """The causal stack on input embeddings: `[B, T, R] -> [B, T, num_levels]` float32 logits."""
        skip_sum = 0.0
        for layer, cond in zip(self.layers, self._conditions(labels)):
            h, skip = layer(h, cond)
            skip_sum = skip_sum + skip
        return self._logits(skip_sum)

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None,
                 labels: jax.Array | None = None) -> dict[str, jax.Array]:
        """Teacher-forced pass: `logits` `[B, T, num_levels]` and `codes` `[B, T]`. `rngs` is unused."""
        codes = self.codes(x)
        return {"logits": self.network(self.embed_inputs(codes), self._labels(labels, codes.shape[0])),
                "codes": codes}

    @staticmethod
    def _log_prob(outputs):
        log_p = jax.nn.log_softmax(outputs["logits"], axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, outputs["codes"][..., None], axis=-1)[..., 0], axis=-1)

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`loss`: mean NLL in nats per sequence; `nll_bits_per_dim` (bits per sample)."""
        nll = -self._log_prob(outputs)
        return {"loss": jnp.mean(nll), "nll_bits_per_dim": jnp.mean(nll) / (outputs["codes"].shape[1] * jnp.log(2.0))}

    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, num_samples: int | None = None,
                 labels: jax.Array | None = None) -> jax.Array:
        """Exact log p(codes): `[B, T] -> [B]` nats. `rngs` and `num_samples` are ignored."""
        return self._log_prob(self(x, labels=labels))

    # ----------------------------------------------------------- sampling
    def _prompt_codes(self, prompt: jax.Array | None, n_samples: int) -> jax.Array:
        """`[n_samples, P]` int32 codes of the prompt (P = 0 without one), checked."""
        if prompt is None:
            return jnp.zeros((n_samples, 0), jnp.int32)
        kind = "waveform samples in [-1, 1]" if self.waveform else "mu-law codes"
        codes = self.codes(broadcast_prompt(prompt, n_samples, 1, what=f"[P] or [n_samples, P] {kind}"))
        length = self.input_shape[0]
        if codes.shape[1] > length:
            raise ValueError(f"wavenet: the prompt has {codes.shape[1]} samples, more than the {length} "
                             "generated (input_shape)")
        return codes

    @compiled_sampling(check=lambda self, *, n_samples, prompt=None, **_: self._prompt_codes(prompt, n_samples))
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 fast: bool = True, prompt: jax.Array | None = None) -> jax.Array:
        """Samples `[n_samples, T]` in one `lax.scan` over time.

        Sample i at step t draws with `fold_in(fold_in(key, i), t)`, so the
        fast and the naive algorithm give the same samples.

        Args:
          n_samples: number of sequences.
          rngs: the `sample` stream (or default).
          labels: `[n_samples]` classes (conditional models).
          temperature: see `sampling.sample_categorical`.
          top_k: see `sampling.sample_categorical`.
          top_p: see `sampling.sample_categorical`.
          fast: per-layer queues of past activations (Paine et al. 2016);
            False reruns the whole network each step.
          prompt: the first P <= T samples of every sequence, `[P]` (shared)
            or `[n_samples, P]`, in the input format (mu-law codes, or
            waveforms in [-1, 1], which come back as their mu-law levels);
            they fill the queues and start the output unchanged.

        Returns:
          int32 codes, or float32 waveforms in [-1, 1] for input_format="waveform".
        """
        check_sampling_settings(temperature, top_k, top_p, self.num_levels)
        labels = self._labels(labels, n_samples)
        conds = self._conditions(labels)
        length = self.input_shape[0]
        prompt = self._prompt_codes(prompt, n_samples)
        draw = prompted_draw(rngs.sample(), n_samples, prompt, temperature=temperature, top_k=top_k, top_p=top_p)

        dtype = self.embed.dtype or jnp.float32
        if fast:
            def step(carry, t):
                h, queues = carry
                skip_sum, new_queues = 0.0, []
                for layer, cond, queue in zip(self.layers, conds, queues):
                    slot = t % layer.dilation  # holds this layer's input from t - dilation
                    past = jax.lax.dynamic_index_in_dim(queue, slot, axis=1)
                    new_queues.append(jax.lax.dynamic_update_index_in_dim(queue, h.astype(queue.dtype), slot, axis=1))
                    h, skip = layer.step(h, past, cond)
                    skip_sum = skip_sum + skip
                code = draw(t, self._logits(skip_sum)[:, 0])
                return (self.embed(code)[:, None, :].astype(dtype), new_queues), code

            h0 = jnp.broadcast_to(self.start[...], (n_samples, 1, self.start.shape[0])).astype(dtype)
            queues = [jnp.zeros((n_samples, layer.dilation, h0.shape[-1]), dtype) for layer in self.layers]
            _, codes = jax.lax.scan(step, (h0, queues), jnp.arange(length))
            codes = codes.T
        else:
            def step(codes, t):
                logits = self.network(self.embed_inputs(codes), labels)
                code = draw(t, jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False))
                return codes.at[:, t].set(code), None

            codes, _ = jax.lax.scan(step, jnp.zeros((n_samples, length), jnp.int32), jnp.arange(length))
        return quantization.mu_law_decode(codes, self.num_levels) if self.waveform else codes
