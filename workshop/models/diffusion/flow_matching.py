"""Flow matching on the conditional optimal-transport path, U-Net or DiT velocity field.

Lipman, Chen, Ben-Hamu, Nickel & Le 2023, "Flow Matching for Generative
Modeling" (arXiv:2210.02747), with the straight path of their OT
conditional flow (sigma_min = 0), which is also the rectified flow of Liu,
Gong & Liu 2023 (arXiv:2209.03003): images in [0, 1] become x0 = 2 y - 1,
y = (255 x + u) / 256 uniformly dequantised (`dequantize`, so the model
has a density to evaluate; else y = x), and

    x_t = (1 - t) x0 + t eps,  eps ~ N(0, I),  t in [0, 1],

so t = 0 is data and t = 1 the standard normal prior. The network regresses
the conditional velocity dx_t/dt = eps - x0 (plain mean squared error); its
minimiser is the marginal velocity E[eps - x0 | x_t], whose flow carries the
prior to the data. Training times are uniform or logit-normal,
t = sigmoid(m + s n) (Esser et al. 2024, "Scaling Rectified Flow
Transformers", arXiv:2403.03206, SD3), which spends the steps on the middle
of the path. The backbone sees 1000 t, the range of DDPM timesteps.

Reflow (Liu et al. 2023, "Flow Straight and Fast", arXiv:2209.03003, the
"2-rectified flow"): with `teacher_workdir` the model trains on (noise,
sample) pairs of a trained flow-matching teacher, eps and the end x0 of the
teacher's ODE from it, instead of independently drawn ones. The velocity
field of such a coupling has straighter paths, so few-step (even one-step)
Euler sampling comes close to the teacher's many-step ODE solution.
`teacher_data` makes the pairs (`workshop.train.teacher` restores the
teacher's workdir and caches them); `__call__` takes each example's `noise`
from the batch.

Class-conditional models (`num_classes`) drop labels with probability
`label_dropout` while training and sample with classifier-free guidance
v = v_u + w (v_c - v_u) (Ho & Salimans 2022, arXiv:2207.12598).

`sample`/`generate` integrate dx/dt = v from t = 1 to t = 0 with Euler,
Heun (fixed steps) or adaptive Dormand-Prince (`ode.py`), one compiled
diffrax loop, and `sample` reports the number of velocity evaluations.
`log_prob` is the log-likelihood through the same ODE run from data to
noise with the instantaneous change of variables (exact divergence or
Hutchinson's estimator), of the 8-bit image under uniform dequantisation.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from pydantic import ConfigDict, Field, PositiveInt

from workshop.core.configuration import ModelConfiguration
from workshop.core.registry import register_model, typed_parameters
from workshop.models.diffusion import ode
from workshop.models.diffusion.backbones import BackboneParameters, ClassConditioning, backbone_name, drop_labels, guided, make_backbone
from workshop.models.layers import compiled_sampling

__all__ = ["FlowMatching", "FlowMatchingParameters", "TIME_SAMPLINGS", "sample_times"]

TIME_SAMPLINGS = ("uniform", "logit_normal")
_TIME_SCALE = 1000.0  # the backbone's timestep embedding sees 1000 t, the span of DDPM timesteps


class FlowMatchingParameters(BackboneParameters):
    """`parameters` of "flow_matching"."""

    model_config = ConfigDict(extra="forbid")

    time_sampling: Literal["uniform", "logit_normal"] = "logit_normal"
    logit_normal_mean: float = Field(0.0, description="m of t = sigmoid(m + s n)")
    logit_normal_std: float = Field(1.0, gt=0.0, description="s of t = sigmoid(m + s n)")
    dequantize: bool = Field(True, description="train on uniformly dequantised 8-bit images")
    label_dropout: float = Field(0.1, ge=0.0, le=1.0, description="label drop rate for classifier-free guidance")
    guidance_scale: float = Field(1.0, ge=0.0, description="default classifier-free guidance scale")
    sampler: Literal["euler", "heun", "dopri5"] = "heun"
    sampling_steps: PositiveInt = Field(25, description="fixed steps, or dopri5's first step 1 / steps")
    rtol: float = Field(1e-5, gt=0.0, description="dopri5 relative tolerance (sampling and log_prob)")
    atol: float = Field(1e-5, gt=0.0, description="dopri5 absolute tolerance (sampling and log_prob)")
    max_ode_steps: PositiveInt = Field(4096, description="dopri5 fails after this many steps")
    likelihood_divergence: Literal["exact", "hutchinson"] = Field(
        "hutchinson", description="log_prob's divergence: exact (one JVP per dimension) or Hutchinson")
    likelihood_probes: PositiveInt = Field(1, description="Rademacher probes per image (hutchinson)")
    likelihood_solver: Literal["euler", "heun", "dopri5"] = "dopri5"
    teacher_workdir: str | None = Field(
        None, description="reflow: train on (noise, sample) pairs of the flow_matching run in this workdir")
    reflow_pairs: PositiveInt = Field(20000, description="reflow: how many pairs the teacher makes (once, cached)")
    teacher_sampler: Literal["euler", "heun", "dopri5"] | None = Field(
        None, description="reflow: the teacher's ODE solver for the pairs (None: its own default)")
    teacher_steps: PositiveInt | None = Field(None, description="reflow: the teacher's solver steps (None: its own)")
    init_from_teacher: bool = Field(
        True, description="reflow: start from the teacher's EMA weights (Liu et al.); False: from random weights")


def sample_times(key: jax.Array, batch: int, kind: str, mean: float = 0.0, std: float = 1.0) -> jax.Array:
    """Training times `[B]` in (0, 1): uniform, or logit-normal sigmoid(mean + std n)."""
    if kind == "uniform":
        return jax.random.uniform(key, (batch,))
    if kind == "logit_normal":
        return jax.nn.sigmoid(mean + std * jax.random.normal(key, (batch,)))
    raise ValueError(f"time_sampling {kind!r} is unknown; known: {', '.join(TIME_SAMPLINGS)}")


@register_model("flow_matching", family="diffusion", parameters=FlowMatchingParameters,
                description="Flow matching on the OT path (Lipman et al. 2023), U-Net or DiT")
class FlowMatching(ClassConditioning, nnx.Module):
    """Flow matching over images `[B, H, W, C]` in [0, 1].

    Args:
      config: `input_shape` (H, W, C), `backbone_type` ("unet" or "dit"),
        `encoder_features` (the U-Net's level widths) and `parameters` (see
        `FlowMatchingParameters`).
      rngs: `params` stream (or default) for the initialisers.
    """

    likelihood_estimate = "exact (ODE)"
    batch_inputs = ("noise",)  # reflow pairs carry each example's noise

    def __init__(self, config: ModelConfiguration, *, rngs: nnx.Rngs):
        p = typed_parameters(config.model_type, config.parameters, FlowMatchingParameters)
        self.model_type = config.model_type
        self.input_shape = tuple(int(s) for s in config.input_shape)
        self.backbone_type = backbone_name(config)
        self.time_sampling = p.time_sampling
        self.logit_normal_mean, self.logit_normal_std = float(p.logit_normal_mean), float(p.logit_normal_std)
        self.dequantize = bool(p.dequantize)
        self.label_dropout, self.guidance_scale = float(p.label_dropout), float(p.guidance_scale)
        self.sampler, self.sampling_steps = p.sampler, int(p.sampling_steps)
        self.rtol, self.atol, self.max_ode_steps = float(p.rtol), float(p.atol), int(p.max_ode_steps)
        self.likelihood_divergence, self.likelihood_probes = p.likelihood_divergence, int(p.likelihood_probes)
        self.likelihood_solver = p.likelihood_solver
        self.teacher_workdir, self.reflow_pairs = p.teacher_workdir, int(p.reflow_pairs)
        self.teacher_sampler, self.teacher_steps = p.teacher_sampler, p.teacher_steps
        self.init_from_teacher = bool(p.init_from_teacher)
        self.likelihood_data = ode.dequantized_likelihood_data(p.likelihood_solver, p.likelihood_divergence,
                                                               p.likelihood_probes)
        if p.num_classes is not None:
            self.num_classes = int(p.num_classes)
        c = self.input_shape[-1]
        self.backbone = make_backbone(config, p, in_channels=c, out_channels=c, rngs=rngs)

    # ------------------------------------------------------------ internals
    def _network(self, x: jax.Array, t: jax.Array, labels: jax.Array | None) -> jax.Array:
        return self.backbone(x, _TIME_SCALE * t, labels)

    def velocity(self, x: jax.Array, t: jax.Array, *, labels: jax.Array | None = None,
                 guidance_scale: float = 1.0) -> jax.Array:
        """The learned v(x_t, t): `[B, H, W, C]`, t `[B]` or scalar -> `[B, H, W, C]` float32."""
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (x.shape[0],))
        null = getattr(self, "num_classes", None)
        return guided(self._network, x, t, labels, null_label=null, guidance_scale=guidance_scale)

    # --------------------------------------------------------- training API
    def __call__(self, x: jax.Array, *, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 noise: jax.Array | None = None) -> dict[str, jax.Array]:
        """One point of each example's path and the network's velocity there.

        Args:
          x: `[B, H, W, C]` images in [0, 1].
          rngs: the `sample` stream (or default) draws u, t, eps and the label drops.
          labels: `[B]` integer classes (conditional models only).
          noise: `[B, H, W, C]`, each example's eps (reflow pairs: `x` is the
            teacher's sample from it, used as is, not dequantised); None
            draws eps independently.

        Returns:
          `prediction`, `target` (eps - x0) `[B, H, W, C]` and `t` `[B]`.
        """
        batch = x.shape[0]
        labels = self._labels(labels, batch)
        if noise is not None or not self.dequantize:
            x0 = 2.0 * jnp.asarray(x, jnp.float32) - 1.0
        else:
            x0 = ode.dequantize(x, rngs.sample())
        t = sample_times(rngs.sample(), batch, self.time_sampling, self.logit_normal_mean, self.logit_normal_std)
        eps = jax.random.normal(rngs.sample(), x0.shape) if noise is None else jnp.asarray(noise, jnp.float32)
        tb = t.reshape(-1, 1, 1, 1)
        x_t = (1.0 - tb) * x0 + tb * eps
        if labels is not None:
            labels = drop_labels(rngs.sample(), labels, self.label_dropout, self.num_classes)
        return {"prediction": self._network(x_t, t, labels), "target": eps - x0, "t": t}

    def loss_fn(self, batch: dict[str, jax.Array], outputs: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """`loss`: the mean squared velocity error per pixel."""
        return {"loss": jnp.mean(jnp.square(outputs["prediction"] - outputs["target"]))}

    # ------------------------------------------------------------- sampling
    def sampling_options(self, *, labels: Any, batch: int, sampler: str | None, steps: int | None,
                         guidance_scale: float | None) -> tuple[jax.Array | None, str, int, float]:
        """Validated (labels, sampler, steps, guidance_scale), defaults from the parameters."""
        labels = self._labels(labels, batch)
        steps = self.sampling_steps if steps is None else steps
        sampler = ode.check_solver(self.sampler if sampler is None else sampler, steps)
        return labels, sampler, int(steps), self._guidance_scale(guidance_scale)

    def sample(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None, sampler: str | None = None,
               steps: int | None = None, guidance_scale: float | None = None) -> tuple[jax.Array, jax.Array]:
        """Samples and the number of velocity evaluations the solver spent.

        Sample i depends only on rngs' key and i, not on n_samples (with a
        fixed-step solver; dopri5's steps adapt to the whole batch).

        Returns:
          `(images [B, H, W, C] in [0, 1], nfe)`; with guidance each
          evaluation runs the network on two batches.
        """
        labels, sampler, steps, w = self.sampling_options(labels=labels, batch=n_samples, sampler=sampler,
                                                          steps=steps, guidance_scale=guidance_scale)
        x0, nfe = self.solve(self.prior_noise(n_samples, rngs.sample()), labels=labels, sampler=sampler,
                             steps=steps, guidance_scale=w)
        return jnp.clip((x0 + 1.0) / 2.0, 0.0, 1.0), nfe

    def prior_noise(self, n: int, key: jax.Array) -> jax.Array:
        """eps_i ~ N(0, I) from `fold_in(key, i)`: `[n, H, W, C]` (sample i does not depend on n)."""
        return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), self.input_shape))(jnp.arange(n))

    def solve(self, x1: jax.Array, *, labels: jax.Array | None, sampler: str, steps: int,
              guidance_scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
        """The flow's end at t = 0 from `x1` at t = 1: `([B, H, W, C]` in model space [-1, 1]-ish, nfe)`."""
        field = lambda t, x: self.velocity(x, t, labels=labels, guidance_scale=guidance_scale)  # noqa: E731
        return ode.integrate(field, x1, 1.0, 0.0, solver=sampler, steps=steps, rtol=self.rtol, atol=self.atol,
                             max_steps=self.max_ode_steps)

    # ---------------------------------------------------------------- reflow
    def teacher_data(self, teacher: nnx.Module, source: dict[str, np.ndarray], *, seed: int,
                     batch_size: int = 256) -> dict[str, np.ndarray]:
        """Reflow pairs: `reflow_pairs` noises and the teacher's ODE samples from them (Liu et al. 2023).

        Args:
          teacher: the trained flow_matching model (evaluation mode, EMA weights).
          source: the real training data; a conditional model's pairs take
            its labels in turn.
          seed: draws the noise.
          batch_size: pairs per compiled teacher solve.

        Returns:
          `{"x": [N, H, W, C] float32 (the teacher's samples in image units,
          not clipped), "noise": [N, H, W, C], "label"?: [N]}`.

        Raises:
          ValueError: the teacher is not a flow_matching model of this input
            shape and class count.
        """
        if not isinstance(teacher, FlowMatching):
            raise ValueError(f"teacher_workdir {self.teacher_workdir}: reflow needs a flow_matching teacher, got "
                             f"{type(teacher).__name__}")
        if teacher.input_shape != self.input_shape:
            raise ValueError(f"teacher_workdir {self.teacher_workdir}: the teacher models input_shape "
                             f"{teacher.input_shape}, this model {self.input_shape}")
        classes = [getattr(m, "num_classes", None) for m in (teacher, self)]
        if classes[0] != classes[1]:
            raise ValueError(f"teacher_workdir {self.teacher_workdir}: the teacher has num_classes {classes[0]}, "
                             f"this model {classes[1]}")
        sampler = teacher.sampler if self.teacher_sampler is None else self.teacher_sampler
        steps = teacher.sampling_steps if self.teacher_steps is None else self.teacher_steps
        graphdef, state = nnx.split(teacher)

        @jax.jit
        def pairs(state, key, labels):
            model = nnx.merge(graphdef, state)
            noise = model.prior_noise(labels.shape[0], key)
            x0, _ = model.solve(noise, labels=labels if self.conditional else None, sampler=sampler,
                                steps=steps, guidance_scale=1.0)
            return (x0 + 1.0) / 2.0, noise

        n, key = self.reflow_pairs, jax.random.PRNGKey(seed)
        labels = np.resize(np.asarray(source["label"], np.int32), n) if self.conditional else np.zeros(n, np.int32)
        xs, noises = [], []
        for i, start in enumerate(range(0, n, batch_size)):
            x, noise = pairs(state, jax.random.fold_in(key, i), labels[start:start + batch_size])
            xs.append(np.asarray(x, np.float32))
            noises.append(np.asarray(noise, np.float32))
        out = {"x": np.concatenate(xs), "noise": np.concatenate(noises)}
        if self.conditional:
            out["label"] = labels
        return out

    @compiled_sampling
    def generate(self, *, n_samples: int, rngs: nnx.Rngs, labels: jax.Array | None = None,
                 sampler: str | None = None, steps: int | None = None,
                 guidance_scale: float | None = None) -> jax.Array:
        """Draws samples by integrating the flow from noise (t = 1) to data (t = 0).

        Args:
          n_samples: B.
          rngs: the `sample` stream (or default).
          labels: `[B]` classes (required by conditional models).
          sampler: "euler", "heun" or "dopri5".
          steps: fixed steps (dopri5: its first step is 1 / steps).
          guidance_scale: classifier-free guidance w (conditional models).

        Returns:
          `[B, H, W, C]` images in [0, 1].
        """
        return self.sample(n_samples=n_samples, rngs=rngs, labels=labels, sampler=sampler, steps=steps,
                           guidance_scale=guidance_scale)[0]

    # ----------------------------------------------------------- likelihood
    def log_prob(self, x: jax.Array, *, rngs: nnx.Rngs, num_samples: int | None = None,
                 labels: jax.Array | None = None) -> jax.Array:
        """log P(x) of 8-bit images through the probability-flow ODE, nats per example `[B]`.

        log P(x) ~= log p(z) - D log 128 for the dequantised z = 2 (255 x + u) / 256 - 1
        (the density of y = (z + 1) / 2 times the bin volume 256^-D), with log p(z)
        from `ode.ode_log_likelihood`.

        Args:
          x: `[B, H, W, C]` float images k / 255 in [0, 1].
          rngs: the `sample` stream draws u and the probes.
          num_samples: Hutchinson probes per image (None: `likelihood_probes`).
          labels: `[B]` classes (conditional models): log P(x | y), no guidance.
        """
        labels = self._labels(labels, x.shape[0])
        z = ode.dequantize(x, rngs.sample())
        probes = self.likelihood_probes if num_samples is None else int(num_samples)
        log_pz, _ = ode.ode_log_likelihood(
            lambda y, t: self.velocity(y, t, labels=labels), z, t0=0.0, t1=1.0,
            divergence=self.likelihood_divergence, key=rngs.sample(), num_probes=probes,
            solver=self.likelihood_solver, steps=self.sampling_steps, rtol=self.rtol, atol=self.atol,
            max_steps=self.max_ode_steps)
        return log_pz - math.prod(self.input_shape) * ode.BIN_LOG_VOLUME
