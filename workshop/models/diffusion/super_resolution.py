"""Super-resolution with a DDPM conditioned on a low-resolution image.

The super-resolution models of Saharia et al. 2021, "Image Super-Resolution
via Iterative Refinement" (SR3, arXiv:2104.07636) and Ho et al. 2021,
"Cascaded Diffusion Models for High Fidelity Image Generation"
(arXiv:2106.15282): the low-resolution image y `[B, H/f, W/f, C]` is
upsampled to `[B, H, W, C]` and concatenated to the denoiser's input x_t as
extra channels, and the model is an ordinary DDPM otherwise. Training makes
its own y by averaging f x f blocks of the batch's images (or takes
`low_res=`). With probability `condition_dropout` the condition is replaced by
zeros (and a "present" channel set to 0), so one model also samples without a
low-resolution image, as classifier-free guidance does for labels (Ho &
Salimans 2022, arXiv:2207.12598); the trainer's sample grids and
`generate()` without `low_res` use that path.

`super_resolve(..., consistency=True)` also keeps every x0 estimate, and the
result, exactly consistent with y: the range-null-space idea of Wang et al.
2022, "Zero-Shot Image Restoration Using Denoising Diffusion Null-Space
Model" (DDNM, arXiv:2212.00490), here as the Euclidean projection onto
{x in [-1, 1]^n : avg_pool_f(x) = y}, so the result stays a valid image and
average-pooling it gives back y.

`log_prob(x)` is the variational bound on log P(x | y) with y = avg_pool_f(x)
(or the given `low_res`), a conditional likelihood, lower than the
unconditional one by construction.
"""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from pydantic import Field, PositiveInt

from workshop.core.configuration import ModelConfiguration
from workshop.core.device_manager import keep_float32
from workshop.core.registry import register_model
from workshop.models.diffusion.ddpm import DDPM, DDPMParameters, _parameters
from workshop.models.diffusion.samplers import clip_x0, map_x0
from workshop.models.layers.compiled_sampling import compiled_sampling

__all__ = [
    "SuperResolutionDDPM",
    "SuperResolutionParameters",
    "average_pool",
    "project_to_low_res",
    "super_resolve",
]

UPSAMPLE_METHODS = ("nearest", "bilinear", "bicubic")


class SuperResolutionParameters(DDPMParameters):
    """`parameters` of "ddpm_super_resolution": those of "ddpm" plus the ones below."""

    downsample_factor: PositiveInt = Field(4, description="f: the low-resolution image is [H/f, W/f, C]")
    condition_dropout: float = Field(0.1, ge=0.0, le=1.0,
                                     description="rate at which training drops the low-resolution condition")
    upsample_method: Literal["nearest", "bilinear", "bicubic"] = "bilinear"


def average_pool(x: jax.Array, factor: int) -> jax.Array:
    """Means of `factor x factor` blocks: `[B, H, W, C] -> [B, H / factor, W / factor, C]`."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def project_to_low_res(x: jax.Array, low_res: jax.Array, factor: int, *, iterations: int = 40) -> jax.Array:
    """Euclidean projection of x onto {z in [-1, 1]^n : average_pool(z, factor) = low_res}.

    Per block the projection is clip(x + lambda, -1, 1) with the one shift
    lambda that gives the block the wanted mean (the KKT conditions of the
    box-constrained problem with one linear equality); lambda is found by
    bisection, the block mean being non-decreasing in it.

    Args:
      x: `[B, H, W, C]` in the [-1, 1] data scale.
      low_res: `[B, H / factor, W / factor, C]` block means wanted, in [-1, 1].
      factor: f.
      iterations: bisection steps (40 halve the bracket below float32 precision).

    Returns:
      `[B, H, W, C]` in [-1, 1] whose f x f block means equal `low_res`.
    """
    b, h, w, c = x.shape
    blocks = x.reshape(b, h // factor, factor, w // factor, factor, c)
    target = jnp.clip(low_res, -1.0, 1.0)[:, :, None, :, None, :]
    lo = -1.0 - jnp.max(blocks, axis=(2, 4), keepdims=True)
    hi = 1.0 - jnp.min(blocks, axis=(2, 4), keepdims=True)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = jnp.mean(jnp.clip(blocks + mid, -1.0, 1.0), axis=(2, 4), keepdims=True) < target
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, bisect, (lo, hi))
    return jnp.clip(blocks + 0.5 * (lo + hi), -1.0, 1.0).reshape(x.shape)


@register_model("ddpm_super_resolution", family="diffusion", parameters=SuperResolutionParameters,
                description="DDPM conditioned on a low-resolution image (SR3, Saharia et al. 2021)")
class SuperResolutionDDPM(DDPM):
    """A DDPM over `[B, H, W, C]` images in [0, 1] given their `[B, H/f, W/f, C]` low-resolution versions.

    Args:
      config: as for "ddpm", with `parameters` of `SuperResolutionParameters`;
        H and W must be multiples of `downsample_factor`.
      rngs: `params` stream (or default).
    """

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = _parameters(config)
        if not isinstance(p, SuperResolutionParameters):
            p = SuperResolutionParameters.model_validate(config.parameters)
        shape = tuple(int(s) for s in config.input_shape)
        f = int(p.downsample_factor)
        if len(shape) != 3 or shape[0] % f or shape[1] % f:
            raise ValueError(f"parameters downsample_factor={f} must divide the height and width of input_shape "
                             f"{shape} (an (H, W, C) image) for model_type {config.model_type!r}")
        # The upsampled image plus one "condition present" channel (0 when dropped).
        super().__init__(config, rngs=rngs, condition_channels=shape[2] + 1)
        self.downsample_factor = f
        self.condition_dropout = float(p.condition_dropout)
        self.upsample_method = p.upsample_method
        self.low_res_shape = (shape[0] // f, shape[1] // f, shape[2])
        # Read by workshop.eval.likelihood: this bound is of a conditional likelihood.
        self.likelihood_data = (f"8-bit images given their {f}x{f}-block means: log P(x | avg_pool_{f}(x)), "
                                "a conditional likelihood")

    # ------------------------------------------------------------ condition
    def check_low_res(self, low_res: Any, batch: int | None = None) -> jax.Array:
        """Validates low-resolution images: `[B, H/f, W/f, C]` floats in [0, 1] (uint8 is divided by 255).

        Raises:
          ValueError: wrong rank or shape, a batch size other than `batch`, or
            (for concrete arrays) values outside [0, 1].
        """
        want = "[B, " + ", ".join(map(str, self.low_res_shape)) + "]"
        a = jnp.asarray(low_res)
        if a.ndim != 4 or tuple(a.shape[1:]) != self.low_res_shape:
            raise ValueError(
                f"low_res must be {want} images (input_shape {self.input_shape} averaged over "
                f"{self.downsample_factor}x{self.downsample_factor} blocks, downsample_factor="
                f"{self.downsample_factor}), got shape {tuple(a.shape)}")
        if batch is not None and a.shape[0] != batch:
            raise ValueError(f"low_res holds {a.shape[0]} images but {batch} samples were asked for")
        if a.dtype == jnp.uint8:
            a = a.astype(jnp.float32) / 255.0
        a = a.astype(jnp.float32)
        if not isinstance(a, jax.core.Tracer) and a.size:
            lo, hi = float(jnp.min(a)), float(jnp.max(a))
            if lo < -1e-6 or hi > 1.0 + 1e-6:
                raise ValueError(f"low_res values must lie in [0, 1] (images k / 255), got range [{lo:.4g}, {hi:.4g}]")
        return a

    def downsample(self, x: jax.Array) -> jax.Array:
        """The low-resolution version the model is trained on: `[B, H, W, C] -> [B, H/f, W/f, C]`."""
        return average_pool(jnp.asarray(x, jnp.float32), self.downsample_factor)

    def condition(self, low_res: jax.Array | None, batch: int) -> jax.Array:
        """The denoiser's extra channels `[B, H, W, C + 1]`: upsampled y in [-1, 1] and a 1 (zeros for None)."""
        h, w, c = self.input_shape
        if low_res is None:
            return jnp.zeros((batch, h, w, c + 1), jnp.float32)
        # Data preparation, no parameters: float32 under any precision policy (the denoiser's
        # first layer casts its input to the compute dtype); the resize is two small matmuls.
        with keep_float32("super_resolution_upsample"):
            up = jax.image.resize(2.0 * low_res - 1.0, (batch, h, w, c), self.upsample_method)
        return jnp.concatenate([up, jnp.ones((batch, h, w, 1), jnp.float32)], axis=-1)

    def _condition_or_null(self, low_res: Any, batch: int) -> jax.Array:
        if low_res is not None:
            return self.condition(self.check_low_res(low_res, batch), batch)
        if self.condition_dropout == 0.0:
            raise ValueError(f"model_type {self.model_type!r} was trained with condition_dropout=0, so it needs "
                             f"low_res= images of shape [B, {', '.join(map(str, self.low_res_shape))}]")
        return self.condition(None, batch)

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 low_res: jax.Array | None = None) -> dict[str, jax.Array]:
        """`DDPM.__call__` given y = `low_res` (default: x averaged over f x f blocks).

        Args:
          x: `[B, H, W, C]` images in [0, 1].
          rngs: the `sample` stream (or default); also draws the condition drops.
          labels: `[B]` classes (class-conditional models only).
          low_res: `[B, H/f, W/f, C]` in [0, 1], or None to downsample x.
        """
        x = jnp.asarray(x, jnp.float32)
        batch = x.shape[0]
        low_res = self.downsample(x) if low_res is None else self.check_low_res(low_res, batch)
        cond = self.condition(low_res, batch)
        if self.condition_dropout > 0.0:
            drop = jax.random.bernoulli(rngs.sample(), self.condition_dropout, (batch,))
            cond = jnp.where(drop[:, None, None, None], 0.0, cond)
        return super().__call__(x, rngs=rngs, labels=labels, condition=cond)

    # ------------------------------------------------------------- sampling
    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, low_res: jax.Array | None = None,
                 labels: jax.Array | None = None, sampler: str | None = None, steps: int | None = None,
                 guidance_scale: float | None = None, eta: float | None = None,
                 consistency: bool = False) -> jax.Array:
        """High-resolution samples given `low_res` (unconditional samples without it).

        Args:
          n_samples: B (must match low_res).
          rngs: the `sample` stream (or default).
          low_res: `[B, H/f, W/f, C]` in [0, 1]; None draws unconditional samples
            (models trained with condition_dropout > 0 only).
          labels: as for `DDPM.generate`.
          sampler: as for `DDPM.generate`.
          steps: as for `DDPM.generate`.
          guidance_scale: as for `DDPM.generate`.
          eta: as for `DDPM.generate`.
          consistency: project every x0 estimate and the result onto the images
            whose f x f block means are `low_res` (see `project_to_low_res`).

        Returns:
          `[B, H, W, C]` images in [0, 1].
        """
        cond = self._condition_or_null(low_res, n_samples)
        labels, sampler, steps, w = self.sampling_options(labels=labels, batch=n_samples, sampler=sampler,
                                                          steps=steps, guidance_scale=guidance_scale)
        denoise = self.denoiser(labels=labels, guidance_scale=w, condition=cond)
        if self.clip_denoised:
            denoise = clip_x0(denoise, self.schedule)
        project = None
        if consistency:
            if low_res is None:
                raise ValueError("consistency=True needs low_res= images to be consistent with")
            target = 2.0 * self.check_low_res(low_res, n_samples) - 1.0
            project = lambda x0: project_to_low_res(x0, target, self.downsample_factor)  # noqa: E731
            denoise = map_x0(denoise, self.schedule, project)
        x = self.sample_with(denoise, n_samples=n_samples, rngs=rngs, sampler=sampler, steps=steps,
                             eta=self.eta if eta is None else eta)
        if project is not None:
            x = project(x)
        return jnp.clip((x + 1.0) / 2.0, 0.0, 1.0)

    # ----------------------------------------------------------- likelihood
    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int | None = None,
                 labels: jax.Array | None = None, low_res: jax.Array | None = None) -> jax.Array:
        """Lower bound on log P(x | y), nats per example `[B]`, y = `low_res` or x's block means.

        Args: as `DDPM.log_prob`, plus `low_res` `[B, H/f, W/f, C]` in [0, 1].
        """
        x = jnp.asarray(x, jnp.float32)
        low_res = self.downsample(x) if low_res is None else self.check_low_res(low_res, x.shape[0])
        return super().log_prob(x, rngs=rngs, num_samples=num_samples, labels=labels,
                                condition=self.condition(low_res, x.shape[0]))


def _draw(graphdef, state, low_res, key, labels, *, sampler, steps, eta, guidance_scale, consistency):
    model = nnx.merge(graphdef, state, copy=True)
    return model.generate(n_samples=low_res.shape[0], rngs=nnx.Rngs(key), low_res=low_res, labels=labels,
                          sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale,
                          consistency=consistency)


_draw_jit = jax.jit(_draw, static_argnames=("graphdef", "sampler", "steps", "eta", "guidance_scale", "consistency"))


def super_resolve(
    model: SuperResolutionDDPM,
    low_res_images: Any,
    *,
    rngs: nnx.Rngs,
    sampler: str | None = None,
    steps: int | None = None,
    eta: float | None = None,
    labels: Any = None,
    guidance_scale: float | None = None,
    consistency: bool = False,
) -> jax.Array:
    """Upsamples a user's images with a trained super-resolution DDPM (one compiled sampling loop).

    Args:
      model: a trained `SuperResolutionDDPM` (EMA parameters, e.g.
        `trainer.model_from_state(state)`).
      low_res_images: `[B, H/f, W/f, C]` floats in [0, 1] or uint8.
      rngs: the `sample` stream (or default); output i depends only on its key and i.
      sampler: "ddpm", "ddim", "dpm_solver_pp_2m" or "heun" (default: the model's).
      steps: sampling steps, 1 <= steps <= num_timesteps (default: the model's).
      eta: DDIM's stochasticity (default: the model's).
      labels: `[B]` classes for class-conditional models.
      guidance_scale: classifier-free guidance on the labels.
      consistency: make the result's f x f block means equal the input exactly.

    Returns:
      `[B, H, W, C]` images in [0, 1].

    Raises:
      TypeError: `model` is not a super-resolution model.
      ValueError: images of the wrong shape or range, and the checks of `DDPM.generate`.
    """
    if not isinstance(model, SuperResolutionDDPM):
        raise TypeError(f"super_resolve needs a model of model_type 'ddpm_super_resolution' "
                        f"(SuperResolutionDDPM), got {type(model).__name__}")
    low_res = model.check_low_res(low_res_images)
    batch = low_res.shape[0]
    # Readable errors before tracing: these checks run on Python values.
    labels, sampler, steps, w = model.sampling_options(labels=labels, batch=batch, sampler=sampler, steps=steps,
                                                       guidance_scale=guidance_scale)
    graphdef, state = nnx.split(model)
    key = rngs.sample()
    return _draw_jit(graphdef, state, low_res, key, labels, sampler=sampler, steps=steps,
                     eta=float(model.eta if eta is None else eta), guidance_scale=w, consistency=bool(consistency))
