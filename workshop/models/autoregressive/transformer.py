"""A decoder-only Transformer over token sequences or images read as pixel sequences.

Radford et al. 2018/2019 (GPT, GPT-2): pre-layer-norm blocks of causal
self-attention (Vaswani et al. 2017, arXiv:1706.03762) and an MLP, learned
or rotary positions (Su et al. 2021, arXiv:2104.09864), and a learned start
token (the class embedding when class-conditional). For images, the pixel
values in raster order (rows, columns, channels) are the tokens, as in the
Image Transformer (Parmar et al. 2018, arXiv:1802.05751) and Image GPT (Chen
et al. 2020).

* `input_shape=(T,)`: integer tokens `[B, T]` in `[0, vocab_size)`, T <= `max_length`.
* `input_shape=(H, W, C)`: images as the pipeline gives them (floats `k / 255`,
  or {0, 1} with `num_levels=2`); the vocabulary is the `num_levels` levels.

p(x) = prod_t p(x_t | x_<t): `log_prob` is exact. `generate` decodes in one
`lax.scan` with a key/value cache per layer, so each token costs one position
(`use_cache=False` recomputes the whole prefix each step, for comparison). A
`prompt` (token ids, or the top rows of an image) is fed through the same
loop: its positions fill the cache and keep their values, then sampling
continues; token models may also ask for any `length` up to `max_length`.

Dropout (`dropout_rate`, GPT-2's placement: on the input embeddings, the
attention weights and each residual branch) is active in training mode only
(the mode after `create_model`, and the trainer's train step, which passes
`rngs`); `model.eval()`, `log_prob` and `generate` never drop.
"""

from __future__ import annotations

import math
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
from workshop.models.autoregressive.attention import CausalSelfAttention, KVCache, check_decode_position
from workshop.models.autoregressive.sampling import broadcast_prompt, check_sampling_settings, prompted_draw
from workshop.models.layers.embedding import LabelEmbedding, class_labels
from workshop.models.layers.compiled_sampling import compiled_sampling

__all__ = ["Transformer", "TransformerParameters"]


class TransformerParameters(pydantic.BaseModel):
    """`parameters` of "transformer"."""

    model_config = ConfigDict(extra="forbid")

    vocab_size: PositiveInt | None = Field(None, description="tokens (input_shape (T,)); images use num_levels")
    num_levels: int = Field(256, ge=2, description="levels per pixel value for image inputs")
    num_layers: PositiveInt = 4
    num_heads: PositiveInt = 4
    embed_dim: PositiveInt = 128
    mlp_dim: PositiveInt | None = Field(None, description="hidden width of the MLP (default 4 * embed_dim)")
    max_length: PositiveInt | None = Field(None, description="longest sequence (default: the input's length)")
    positions: Literal["learned", "rotary"] = "learned"
    num_classes: PositiveInt | None = Field(None, description="class-conditional when set; labels in [0, n)")
    dropout_rate: float = Field(0.0, ge=0.0, lt=1.0,
                                description="embedding, attention and residual dropout in training mode")


class _Block(nnx.Module):
    """x + drop(attn(LN(x))), then x + drop(MLP(LN(x))): `[B, T, D] -> [B, T, D]`."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, positions: str, dropout_rate: float, *, rngs: nnx.Rngs):
        policy = get_precision_policy()
        kw = {"dtype": policy.compute_dtype, "param_dtype": policy.param_dtype, "rngs": rngs}
        self.norm1 = nnx.LayerNorm(dim, **kw)
        self.attn = CausalSelfAttention(dim, heads, positions=positions, dropout_rate=dropout_rate, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, **kw)
        self.mlp_in = nnx.Linear(dim, mlp_dim, **kw)
        self.mlp_out = nnx.Linear(mlp_dim, dim, **kw)
        self.dropout = nnx.Dropout(dropout_rate)

    def _mlp(self, x):
        return self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x))))

    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, deterministic: bool | None = None) -> jax.Array:
        drop = lambda h: self.dropout(h, deterministic=deterministic, rngs=rngs)  # noqa: E731
        x = x + drop(self.attn(self.norm1(x), rngs=rngs, deterministic=deterministic))
        return x + drop(self._mlp(x))

    def decode(self, x: jax.Array, cache: KVCache, index: jax.Array) -> tuple[jax.Array, KVCache]:
        a, cache = self.attn.decode(self.norm1(x), cache, index)
        x = x + a
        return x + self._mlp(x), cache


@register_model("transformer", family="autoregressive", parameters=TransformerParameters,
                description="Decoder-only Transformer over tokens or pixel sequences, KV-cache decoding")
class Transformer(nnx.Module):
    """Decoder-only Transformer (see the module docstring).

    Args:
      config: `input_shape` (`(T,)` tokens or `(H, W, C)` images) and
        `parameters` (see `TransformerParameters`).
      rngs: `params` stream (or default).
    """

    likelihood_estimate = "exact"
    likelihood_data = "discrete tokens: the probability mass"

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = TransformerParameters.model_validate(config.parameters)
        self.input_shape = tuple(int(s) for s in config.input_shape)
        if len(self.input_shape) == 3:
            self.image = True
            self.vocab_size = int(p.num_levels)
            if p.vocab_size is not None and p.vocab_size != p.num_levels:
                raise ValueError(f"image inputs use num_levels ({p.num_levels}) tokens; got vocab_size {p.vocab_size}")
        elif len(self.input_shape) == 1:
            self.image = False
            if p.vocab_size is None:
                raise ValueError("transformer over token sequences (input_shape (T,)) needs parameters.vocab_size")
            self.vocab_size = int(p.vocab_size)
        else:
            raise ValueError(f"transformer takes input_shape (T,) for tokens or (H, W, C) for images, "
                             f"got {self.input_shape}")
        self.length = math.prod(self.input_shape)
        self.max_length = int(p.max_length or self.length)
        quantization.check_sequence_length(self.length, self.max_length, model_name="transformer input_shape")
        policy = get_precision_policy()
        kw = {"dtype": policy.compute_dtype, "param_dtype": policy.param_dtype, "rngs": rngs}
        dim = p.embed_dim
        self.embed = nnx.Embed(self.vocab_size, dim, **kw)
        self.learned_positions = p.positions == "learned"
        if self.learned_positions:
            self.position_embed = nnx.Embed(self.max_length, dim, **kw)
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)
            self.start = LabelEmbedding(self.num_classes, dim, rngs=rngs)
        else:
            self.start_token = nnx.Param(jax.random.normal(rngs.params(), (dim,), policy.param_dtype) * 0.02)
        self.dropout_rate = float(p.dropout_rate)
        self.embed_dropout = nnx.Dropout(p.dropout_rate)
        self.blocks = nnx.List([
            _Block(dim, p.num_heads, p.mlp_dim or 4 * dim, p.positions, p.dropout_rate, rngs=rngs)
            for _ in range(p.num_layers)
        ])
        self.final_norm = nnx.LayerNorm(dim, **kw)
        self.head = nnx.Linear(dim, self.vocab_size, **kw)

    # ------------------------------------------------------------ internals
    def _labels(self, labels, batch_size: int) -> jax.Array | None:
        return class_labels(labels, getattr(self, "num_classes", None), batch_size, model_name="transformer",
                            unconditional_hint="set parameters.num_classes")

    def tokens(self, x: jax.Array) -> jax.Array:
        """Model inputs -> `[B, T]` int32 tokens, checked (see the module docstring)."""
        if self.image:
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(f"transformer expects images [B, {', '.join(map(str, self.input_shape))}], "
                                 f"got shape {tuple(x.shape)}")
            levels = quantization.image_to_levels(x, self.vocab_size, model_name="transformer")
            return levels.reshape(x.shape[0], -1)
        if x.ndim != 2:
            raise ValueError(f"transformer expects tokens [B, T], got shape {tuple(x.shape)}")
        quantization.check_sequence_length(x.shape[1], self.max_length, model_name="transformer")
        return quantization.check_tokens(x, self.vocab_size, model_name="transformer")

    def check_inputs(self, x) -> None:
        """Checks a whole host data array `[N, ...]` (e.g. the training set) before training.

        Token models: ids `[N, T]` with T <= `max_length`, in `[0, vocab_size)`
        (see `quantization.check_token_array`); image models: the shape.

        Raises:
          ValueError: naming the first bad value and its index.
        """
        if self.image:
            if tuple(np.shape(x)[1:]) != self.input_shape:
                raise ValueError(f"transformer expects images [N, {', '.join(map(str, self.input_shape))}], "
                                 f"got shape {tuple(np.shape(x))}")
            return
        quantization.check_token_array(x, self.vocab_size, max_length=self.max_length, model_name="transformer")

    def _start(self, labels: jax.Array | None, batch_size: int) -> jax.Array:
        if labels is not None:
            return self.start(labels)
        return jnp.broadcast_to(self.start_token[...], (batch_size, self.start_token.shape[0]))

    def embed_inputs(self, tokens: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        """Input embeddings `[B, T, D]`: the start token, then tokens 0..T-2 (shifted right)."""
        b, t = tokens.shape
        start = self._start(labels, b)[:, None, :]
        h = jnp.concatenate([start.astype(self.embed.dtype or jnp.float32),
                             self.embed(tokens[:, :-1]).astype(start.dtype)], axis=1)
        if self.learned_positions:
            h = h + self.position_embed(jnp.arange(t))[None]
        return h

    def transform(self, h: jax.Array, *, rngs: nnx.Rngs | None = None,
                  deterministic: bool | None = None) -> jax.Array:
        """The causal stack on input embeddings: `[B, T, D] -> [B, T, vocab]` float32 logits.

        Args:
          h: `[B, T, D]` input embeddings.
          rngs: the `dropout` stream (or default), needed when dropping.
          deterministic: True turns dropout off whatever the mode; None
            follows the mode (`model.train()` / `model.eval()`).
        """
        if self.dropout_rate > 0.0 and rngs is None and not self._deterministic(deterministic):
            raise ValueError(f"transformer with dropout_rate={self.dropout_rate} in training mode needs rngs= "
                             "to draw dropout masks; call model.eval() for deterministic outputs")
        h = self.embed_dropout(h, deterministic=deterministic, rngs=rngs)
        for block in self.blocks:
            h = block(h, rngs=rngs, deterministic=deterministic)
        return self.head(self.final_norm(h)).astype(jnp.float32)

    def _deterministic(self, deterministic: bool | None) -> bool:
        return bool(self.embed_dropout.deterministic) if deterministic is None else deterministic

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, labels: jax.Array | None = None,
                 deterministic: bool | None = None) -> dict[str, jax.Array]:
        """Teacher-forced pass: `logits` `[B, T, vocab]` and `tokens` `[B, T]`.

        Args:
          x: tokens `[B, T]` or images `[B, H, W, C]` (see the module docstring).
          rngs: draws dropout masks in training mode (`dropout` stream or
            default); unused when `dropout_rate` is 0 or in eval mode.
          labels: `[B]` classes (conditional models).
          deterministic: True disables dropout whatever the mode.
        """
        tokens = self.tokens(x)
        logits = self.transform(self.embed_inputs(tokens, self._labels(labels, tokens.shape[0])),
                                rngs=rngs, deterministic=deterministic)
        return {"logits": logits, "tokens": tokens}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`loss`: mean NLL in nats per example; `nll_bits_per_dim` (bits per token).

        Token models also report `perplexity`, exp(nats per token) of the batch.
        """
        nll = -self._log_prob(outputs)
        dims = outputs["tokens"].shape[1]
        metrics = {"loss": jnp.mean(nll), "nll_bits_per_dim": jnp.mean(nll) / (dims * jnp.log(2.0))}
        if not self.image:
            metrics["perplexity"] = jnp.exp(jnp.mean(nll) / dims)
        return metrics

    @staticmethod
    def _log_prob(outputs):
        log_p = jax.nn.log_softmax(outputs["logits"], axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, outputs["tokens"][..., None], axis=-1)[..., 0], axis=-1)

    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs | None = None, num_samples: int | None = None,
                 labels: jax.Array | None = None) -> jax.Array:
        """Exact log p(x): `[B, ...] -> [B]` nats, without dropout. `rngs` and `num_samples` are ignored."""
        return self._log_prob(self(x, labels=labels, deterministic=True))

    # ----------------------------------------------------------- decoding
    def init_cache(self, batch_size: int) -> list[KVCache]:
        """Empty key/value caches, one per block, for `max_length` positions."""
        return [block.attn.init_cache(batch_size, self.max_length) for block in self.blocks]

    def decode_step(self, h: jax.Array, caches: list[KVCache], index: jax.Array) -> tuple[jax.Array, list[KVCache]]:
        """One position through every block.

        Args:
          h: `[B, 1, D]` input embedding at position `index` (without positions).
          caches: one `KVCache` per block (`init_cache`).
          index: scalar int position in `[0, max_length)`.

        Returns:
          `[B, vocab]` float32 logits of the token at `index`, and the caches.

        Raises:
          ValueError: a concrete `index` outside `[0, max_length)`, or caches
            of another length. A traced `index` (inside `jit` / `scan`)
            cannot be checked: bound the loop by `max_length`, as `generate` does.
        """
        for cache in caches:
            if cache.keys.shape[1] != self.max_length:
                raise ValueError(f"transformer: caches hold {cache.keys.shape[1]} positions but max_length is "
                                 f"{self.max_length}; make them with model.init_cache(batch_size)")
        check_decode_position(index, self.max_length, model_name="transformer decode_step")
        if self.learned_positions:
            h = h + self.position_embed(jnp.reshape(index, (1,)))[None]
        new = []
        for block, cache in zip(self.blocks, caches):
            h, cache = block.decode(h, cache, index)
            new.append(cache)
        return self.head(self.final_norm(h))[:, 0].astype(jnp.float32), new

    def _prompt_tokens(self, prompt, n_samples: int, length: int | None) -> tuple[int, jax.Array]:
        """(tokens to generate, `[n_samples, P]` int32 prompt tokens), checked."""
        if self.image:
            if length is not None and int(length) != self.length:
                raise ValueError(f"transformer over images generates whole {self.input_shape} images "
                                 f"({self.length} values); length={length} is for token models")
            length = self.length
            if prompt is None:
                return length, jnp.zeros((n_samples, 0), jnp.int32)
            h, w, c = self.input_shape
            rows = broadcast_prompt(prompt, n_samples, 3, what=f"the top rows of an image, [R, {w}, {c}] or "
                                    f"[n_samples, R, {w}, {c}] with R <= {h}")
            if tuple(rows.shape[2:]) != (w, c) or rows.shape[1] > h:
                raise ValueError(f"transformer image prompt must be the top rows [n_samples, R, {w}, {c}] with "
                                 f"R <= {h}; got shape {tuple(rows.shape)}")
            tokens = quantization.image_to_levels(rows, self.vocab_size, model_name="transformer prompt")
            return length, tokens.reshape(n_samples, -1)
        length = self.length if length is None else int(length)
        if not 1 <= length <= self.max_length:
            raise ValueError(f"transformer: length {length} must lie in [1, max_length={self.max_length}] "
                             "(the key/value cache and positions end at max_length)")
        if prompt is None:
            return length, jnp.zeros((n_samples, 0), jnp.int32)
        tokens = broadcast_prompt(prompt, n_samples, 1, what="[P] or [n_samples, P] token ids")
        tokens = quantization.check_tokens(tokens, self.vocab_size, model_name="transformer prompt")
        if tokens.shape[1] > length:
            raise ValueError(f"transformer: the prompt has {tokens.shape[1]} tokens, more than the {length} "
                             "to generate; pass a longer length (at most max_length)")
        return length, tokens

    @compiled_sampling(check=lambda self, *, n_samples, prompt=None, length=None, **_: self._prompt_tokens(
        prompt, n_samples, length))
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 use_cache: bool = True, prompt: jax.Array | None = None, length: int | None = None) -> jax.Array:
        """Samples `[n_samples, *input_shape]` in one `lax.scan` over positions.

        Sample i at position t draws with `fold_in(fold_in(key, i), t)`, so
        samples do not change with `n_samples` or with `use_cache`.

        Args:
          n_samples: number of sequences.
          rngs: the `sample` stream (or default).
          labels: `[n_samples]` classes (conditional models).
          temperature: see `sampling.sample_categorical`.
          top_k: see `sampling.sample_categorical`.
          top_p: see `sampling.sample_categorical`.
          use_cache: decode with the key/value cache (one position per step);
            False reruns the full prefix each step (for benchmarks and tests).
          prompt: the known start, kept unchanged in the output; the scan
            runs it through the cache, then samples the rest. Token models:
            ids `[P]` (every sample) or `[n_samples, P]`; image models: the
            top rows `[R, W, C]` or `[n_samples, R, W, C]`, as the inputs.
          length: tokens per sample (token models), prompt included;
            default the input length, at most `max_length`.

        Returns:
          tokens (int32) `[n_samples, length]` for `(T,)` inputs; images in
          [0, 1] for `(H, W, C)`.

        Raises:
          ValueError: `length` beyond `max_length`, a prompt longer than
            `length` or of the wrong shape, or bad sampling settings.
        """
        check_sampling_settings(temperature, top_k, top_p, self.vocab_size)
        labels = self._labels(labels, n_samples)
        length, prompt = self._prompt_tokens(prompt, n_samples, length)
        draw = prompted_draw(rngs.sample(), n_samples, prompt, temperature=temperature, top_k=top_k, top_p=top_p)

        start = self._start(labels, n_samples)[:, None, :]
        if use_cache:
            def step(carry, t):
                h, caches = carry
                logits, caches = self.decode_step(h, caches, t)
                token = draw(t, logits)
                return (self.embed(token)[:, None, :].astype(h.dtype), caches), token

            h0 = start.astype(self.embed.dtype or jnp.float32)
            _, tokens = jax.lax.scan(step, (h0, self.init_cache(n_samples)), jnp.arange(length))
            tokens = tokens.T
        else:
            def step(tokens, t):
                logits = self.transform(self.embed_inputs(tokens, labels), deterministic=True)
                token = draw(t, jax.lax.dynamic_index_in_dim(logits, t, axis=1, keepdims=False))
                return tokens.at[:, t].set(token), None

            tokens, _ = jax.lax.scan(step, jnp.zeros((n_samples, length), jnp.int32), jnp.arange(length))
        if self.image:
            return quantization.levels_to_image(tokens.reshape(n_samples, *self.input_shape), self.vocab_size)
        return tokens
