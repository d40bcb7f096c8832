"""Inpainting with a trained DDPM: fill the unknown pixels of a user's images.

At every reverse step the unknown region comes from the sampler and the
known region from the forward process applied to the given image,
x_s = m * q_sample(x0_known, s) + (1 - m) * x_s (the replacement method of
Song et al. 2021, arXiv:2011.13456, appendix; Lugmayr et al. 2022). With
`resample_steps` r > 1 each step is repeated r times, jumping back from s to
t through q(x_t | x_s) in between, the resampling of Lugmayr et al. 2022,
"RePaint: Inpainting using Denoising Diffusion Probabilistic Models"
(arXiv:2201.09865), with jump length 1. The whole loop is one `lax.scan`
(with a `fori_loop` for the resampling); known pixels are returned exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from workshop.models.diffusion.ddpm import DDPM
from workshop.models.diffusion.samplers import clip_x0, discrete_step, discrete_tables, per_example_normal

__all__ = ["INPAINTING_SAMPLERS", "inpaint"]

INPAINTING_SAMPLERS = ("ddpm", "ddim")


def _mask(mask: Any, images: jax.Array) -> jax.Array:
    """A mask of shape `[B, H, W, C]`, `[H, W, C]`, `[H, W, 1]` or `[H, W]` as floats broadcastable to images."""
    m = jnp.asarray(mask)
    b, h, w, c = images.shape
    accepted = {(b, h, w, c), (b, h, w, 1), (1, h, w, c), (1, h, w, 1), (h, w, c), (h, w, 1), (h, w)}
    if tuple(m.shape) not in accepted:
        raise ValueError(
            f"mask of shape {tuple(m.shape)} does not fit images of shape {tuple(images.shape)}; give "
            f"[B, H, W, C], [H, W, C], [H, W, 1] or [H, W] = {[b, h, w, c]}, {[h, w, c]}, {[h, w, 1]} or {[h, w]} "
            "with 1 for known pixels"
        )
    if m.ndim == 2:
        m = m[..., None]
    if m.ndim == 3:
        m = m[None]
    return (m > 0.5).astype(jnp.float32)


def inpaint(
    model: DDPM,
    images: jax.Array,
    mask: Any,
    *,
    rngs: nnx.Rngs,
    labels: jax.Array | None = None,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 1.0,
    resample_steps: int = 1,
    guidance_scale: float | None = None,
) -> jax.Array:
    """Fills the pixels where `mask` is 0, keeping those where it is 1.

    Args:
      model: a trained `DDPM` (EMA parameters, e.g. `trainer.model_from_state(state)`).
      images: `[B, H, W, C]` in [0, 1]; values under mask 0 are ignored.
      mask: 1 = known, 0 = to fill; `[B, H, W, C]`, `[H, W, C]`, `[H, W, 1]` or `[H, W]`.
      rngs: the `sample` stream (or default).
      labels: `[B]` classes for conditional models.
      sampler: "ddpm" or "ddim".
      steps: reverse steps (default: the model's `sampling_steps`).
      eta: DDIM's stochasticity (ignored by "ddpm").
      resample_steps: RePaint's r, repeats of each step (1 = plain replacement).
      guidance_scale: classifier-free guidance for conditional models.

    Returns:
      `[B, H, W, C]` in [0, 1], equal to `images` where the mask is 1.

    Raises:
      ValueError: a mask of the wrong shape, a sampler other than ddpm/ddim,
        resample_steps < 1, or the checks of `DDPM.generate`.
    """
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 4 or tuple(images.shape[1:]) != model.input_shape:
        raise ValueError(f"images must be [B, {', '.join(map(str, model.input_shape))}], got {tuple(images.shape)}")
    m = _mask(mask, images)
    if str(sampler).strip().lower() not in INPAINTING_SAMPLERS:
        raise ValueError(f"inpainting sampler {sampler!r} is not supported; known: {', '.join(INPAINTING_SAMPLERS)}")
    if int(resample_steps) < 1:
        raise ValueError(f"resample_steps must be >= 1, got {resample_steps}")
    batch = images.shape[0]
    labels, name, steps, w = model.sampling_options(labels=labels, batch=batch, sampler=sampler, steps=steps,
                                                    guidance_scale=guidance_scale)
    denoise = model.denoiser(labels=labels, guidance_scale=w)
    if model.clip_denoised:
        denoise = clip_x0(denoise, model.schedule)
    tab = {k: jnp.asarray(v, jnp.float32) for k, v in discrete_tables(model.schedule, steps).items()}
    known = 2.0 * images - 1.0
    r = int(resample_steps)
    key = rngs.sample()
    pairs = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i)))(jnp.arange(batch))
    keys = pairs[:, 1]
    shape = images.shape[1:]

    def body(x_t, inputs):
        i, t, abar_t, abar_s = inputs

        def step(x, j):
            x0, eps = denoise(x, jnp.full((batch,), t))
            n = 3 * (i * r + j)
            x_s = discrete_step(name, x, x0.astype(jnp.float32), eps.astype(jnp.float32),
                                per_example_normal(keys, n, shape), abar_t, abar_s, eta=eta)
            known_s = jnp.sqrt(abar_s) * known + jnp.sqrt(1.0 - abar_s) * per_example_normal(keys, n + 1, shape)
            return m * known_s + (1.0 - m) * x_s

        def resample(j, x):
            x_s = step(x, j)
            ratio = abar_t / abar_s
            return jnp.sqrt(ratio) * x_s + jnp.sqrt(1.0 - ratio) * per_example_normal(keys, 3 * (i * r + j) + 2, shape)

        x_t = jax.lax.fori_loop(0, r - 1, resample, x_t)
        return step(x_t, r - 1), None

    x_T = jax.vmap(lambda k: jax.random.normal(k, shape))(pairs[:, 0])
    x, _ = jax.lax.scan(body, x_T, (jnp.arange(steps), tab["t"], tab["abar_t"], tab["abar_s"]))
    return jnp.where(m > 0.5, images, jnp.clip((x + 1.0) / 2.0, 0.0, 1.0))
