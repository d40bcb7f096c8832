"""The flows under a bfloat16 policy: matmuls in bf16, log-dets and invertibility kept.

Each flow is run as the Trainer runs it under `precision="bfloat16"`: every
layer's `dtype` set by `apply_compute_dtype` and the float32 parameters cast
to bfloat16. Checked, against the same model in float32:

* the density pass (`_to_latent`) and the sampling pass (`_from_latent`)
  compute every matmul/convolution in bfloat16, except the LU products of the
  invertible 1x1 convolutions (`keep_float32("invertible_1x1_lu")`);
* the log-det moves by less than `_LOG_DET_TOL` nats per dimension;
* `_from_latent(_to_latent(h))` returns h to within `_INVERSE_TOL`, in the
  preprocessed space: exactly (float32 rounding) where every bf16 matmul is
  inside a conditioner, a few bf16 rounding steps (2^-9 relative) per 1x1
  convolution otherwise (`_INVERSE_RTOL_1X1`, relative to max |h|);
* building the model under the process-wide bf16 policy gives the same layer
  dtypes as applying the dtype afterwards.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import device_manager as dm
from workshop.core.configuration import ModelConfiguration
from workshop.models.factories import create_flow

_HIDDEN = dict(hidden_channels=16, hidden_features=[32])
# name -> (model_type, input_shape, parameters, has invertible 1x1 convolutions)
_CASES = {
    "glow": ("glow", (8, 8, 2), dict(coupling_type="affine", num_levels=2), True),
    "realnvp": ("realnvp", (8, 8, 1), dict(num_levels=2), False),
    "nsf_coupling": ("nsf", (4, 4, 2), dict(transform="coupling"), True),
    "nsf_autoregressive": ("nsf", (6,), dict(transform="autoregressive"), False),
    "maf": ("maf", (6,), {}, False),
}
_LOG_DET_TOL = 0.01  # nats per dimension; measured up to 4e-3 (nsf coupling)
_INVERSE_TOL = 1e-4
# Each 1x1 convolution rounds its input, W, W^-1 and its output to bf16 (2^-9 relative each) and
# the couplings between them scale the error; the glow here has four of them, the nsf two.
_INVERSE_RTOL_1X1 = 0.05  # measured 1.2% (glow), 0.8% (nsf coupling)
_ALLOWED_F32 = dm.FLOAT32_SCOPE_PREFIX + "invertible_1x1_lu"


def _build(name, seed=0):
    model_type, shape, params, _ = _CASES[name]
    config = ModelConfiguration(model_type=model_type, input_shape=shape, num_flows=2,
                                parameters={**_HIDDEN, **params})
    return create_flow(config, rngs=nnx.Rngs(seed))


def _randomize(model, scale=0.05):
    """Adds N(0, scale^2) noise to every parameter (host-side: no compilation), so the zero-initialised
    (identity) conditioners do something."""
    rng = np.random.default_rng(0)
    params = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(
        lambda p: jnp.asarray(np.asarray(p) + scale * rng.standard_normal(p.shape).astype(np.float32)), params))
    return model


def _data(shape, n=4):
    if len(shape) == 3:
        return jnp.asarray(np.random.default_rng(1).integers(0, 256, (n, *shape)) / 255.0, jnp.float32)
    return jnp.asarray(np.random.default_rng(1).standard_normal((n, *shape)), jnp.float32)


def _round_trip(graphdef, params, rest, x):
    """h (preprocessed x), z, log|det dz/dh| and _from_latent(z)."""
    model = nnx.merge(graphdef, params, rest, copy=True)
    h = model._preprocess((x * 255.0 + 0.5) / 256.0)[0] if model.is_image else x
    z, log_det = model._to_latent(h, None)
    return h, z, log_det, model._from_latent(z, None)


def _bf16_params(params):
    return jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)


@jax.jit(static_argnums=(0, 3))
def _float32_and_bfloat16(graphdef, params, rest, graphdef_bf16, x):
    """Both round trips in one program, after a first pass sets ActNorm's data-dependent statistics."""
    model = nnx.merge(graphdef, params, rest, copy=True)
    model.log_prob(x)
    _, params, rest = nnx.split(model, nnx.Param, ...)
    return (_round_trip(graphdef, params, rest, x),
            _round_trip(graphdef_bf16, _bf16_params(params), rest, x))


class FlowBFloat16Test(parameterized.TestCase):
    def tearDown(self):
        dm.set_precision_policy(dm.PrecisionPolicy())
        super().tearDown()

    @parameterized.named_parameters(*[(name, name) for name in _CASES])
    def test_matmuls_log_det_and_inverse_under_bf16(self, name):
        model = _randomize(_build(name))
        x = _data(model.input_shape)
        has_1x1 = _CASES[name][3]
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        trained = nnx.clone(model)  # as the Trainer's bf16 step runs it: layers in bf16, parameters cast
        self.assertNotEmpty(dm.apply_compute_dtype(trained, jnp.bfloat16))
        graphdef_bf16 = nnx.split(trained, nnx.Param, ...)[0]

        sites = dm.matmul_sites(jax.make_jaxpr(_round_trip, static_argnums=0)(graphdef_bf16, _bf16_params(params),
                                                                               rest, x))
        f32 = [s for s in sites if s.dtype == "float32"]
        self.assertTrue(any(s.dtype == "bfloat16" for s in sites), name)
        for site in f32:
            self.assertIn(_ALLOWED_F32, site.scope, f"{name}: a float32 matmul at {site.source} ({site.scope})")
        self.assertEqual(bool(f32), has_1x1)

        (h, _, ld32, back32), (h16, z16, ld16, back16) = _float32_and_bfloat16(graphdef, params, rest,
                                                                               graphdef_bf16, x)
        self.assertEqual((z16.dtype, ld16.dtype, back16.dtype), (jnp.float32,) * 3)
        np.testing.assert_array_equal(h16, h)
        num_dims = math.prod(model.input_shape)
        drift = float(jnp.max(jnp.abs(ld16 - ld32))) / num_dims
        self.assertLess(drift, _LOG_DET_TOL, f"{name}: log-det moved {drift:.3g} nats/dim under bf16")
        self.assertGreater(float(jnp.max(jnp.abs(ld32))), 2 * num_dims * _LOG_DET_TOL)  # not a trivial log-det
        self.assertLess(float(jnp.max(jnp.abs(back32 - h))), _INVERSE_TOL)
        err = float(jnp.max(jnp.abs(back16 - h)))
        tol = _INVERSE_RTOL_1X1 * float(jnp.max(jnp.abs(h))) if has_1x1 else _INVERSE_TOL
        self.assertLess(err, tol, f"{name}: inverse(forward(h)) off by {err:.3g} under bf16")

    @parameterized.named_parameters(("maf", "maf"), ("glow", "glow"))
    def test_policy_at_build_time_matches_apply_compute_dtype(self, name):
        applied = _build(name)
        dm.apply_compute_dtype(applied, jnp.bfloat16)
        dm.set_precision_policy(dm.precision_policy("bfloat16"))
        built = _build(name)

        def dtypes(model):
            return [(path, jnp.dtype(node.dtype)) for path, node in nnx.iter_graph(model)
                    if isinstance(node, nnx.Module) and getattr(node, "dtype", None) is not None]

        self.assertEqual(dtypes(built), dtypes(applied))
        self.assertEqual({d for _, d in dtypes(built)}, {jnp.dtype(jnp.bfloat16)})
        for leaf in jax.tree.leaves(nnx.state(built, nnx.Param)):
            self.assertEqual(leaf.dtype, jnp.float32)


if __name__ == "__main__":
    absltest.main()
