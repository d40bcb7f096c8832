"""Every shared layer honours the precision policy: float32 parameters, compute in the policy's dtype.

Two routes reach a layer: the process-wide policy when it is built
(`set_precision_policy`, `configure_for_generative_models`), and
`apply_compute_dtype` on a built model (what the Trainer does for
`TrainingConfiguration.precision`). Both are checked on the matmuls and
convolutions of the traced forward pass.
"""

import jax
import jax.numpy as jnp
from absl.testing import absltest, parameterized
from flax import nnx

from workshop.core import device_manager as dm
from workshop.models import layers


def _cases():
    """name -> (builder, example input)."""
    image = jnp.ones((2, 8, 8, 3))
    return {
        "MLP": (lambda r: layers.MLP(12, [16], 4, rngs=r), jnp.ones((2, 12))),
        "ConvEncoder": (lambda r: layers.ConvEncoder((8, 8, 3), [8, 16], rngs=r), image),
        "ConvDecoder": (lambda r: layers.ConvDecoder((8, 8, 3), [16, 8], 2, in_features=6, rngs=r), jnp.ones((2, 6))),
        "SpatialSelfAttention": (lambda r: layers.SpatialSelfAttention(8, num_heads=2, rngs=r), jnp.ones((2, 4, 4, 8))),
        "TimestepEmbedding": (lambda r: layers.TimestepEmbedding(16, rngs=r), jnp.arange(2)),
        "LabelEmbedding": (lambda r: layers.LabelEmbedding(5, 16, rngs=r), jnp.arange(2)),
    }


_SHORT = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}


def _compute_dtypes(layer, x):
    """Result dtypes of the matmuls and convolutions of `layer(x)` (the output's for a lookup).

    `jax.nn.dot_product_attention` forms the attention logits (its einsum
    "BTNH,BSNH->BNTS") in float32 from half-precision queries and keys on
    purpose (a stable softmax); under a half-precision layer that one matmul
    is left out.
    """
    sites = dm.matmul_sites(jax.make_jaxpr(lambda x: layer(x))(x))
    if any(site.dtype != "float32" for site in sites):
        sites = [site for site in sites if "BTNH,BSNH->BNTS" not in site.scope]
    found = {_SHORT[site.dtype] for site in sites}
    return found or {_SHORT[jnp.dtype(layer(x).dtype).name]}


def _param_dtypes(layer):
    return {leaf.dtype for leaf in jax.tree.leaves(nnx.state(layer, nnx.Param))}


class LayerPrecisionTest(parameterized.TestCase):
    def tearDown(self):
        dm.set_precision_policy(dm.PrecisionPolicy())
        super().tearDown()

    @parameterized.named_parameters(*[(name, name) for name in _cases()])
    def test_default_policy_is_float32(self, name):
        build, x = _cases()[name]
        layer = build(nnx.Rngs(0))
        self.assertEqual(_compute_dtypes(layer, x), {"f32"})
        self.assertEqual(_param_dtypes(layer), {jnp.dtype(jnp.float32)})

    @parameterized.named_parameters(*[(name, name) for name in _cases()])
    def test_policy_at_build_time(self, name):
        build, x = _cases()[name]
        dm.set_precision_policy(dm.precision_policy("bfloat16"))
        layer = build(nnx.Rngs(0))
        self.assertEqual(_compute_dtypes(layer, x), {"bf16"})
        self.assertEqual(_param_dtypes(layer), {jnp.dtype(jnp.float32)})

    @parameterized.named_parameters(*[(name, name) for name in _cases()])
    def test_compute_dtype_applied_after_build(self, name):
        build, x = _cases()[name]
        layer = build(nnx.Rngs(0))
        reference = layer(x).astype(jnp.float32)
        self.assertNotEmpty(dm.apply_compute_dtype(layer, jnp.bfloat16))
        self.assertEqual(_compute_dtypes(layer, x), {"bf16"})
        self.assertEqual(_param_dtypes(layer), {jnp.dtype(jnp.float32)})
        # bfloat16 keeps 8 bits of mantissa: the result moves by about 1% at most.
        out = layer(x).astype(jnp.float32)
        scale = float(jnp.max(jnp.abs(reference))) + 1e-6
        self.assertLess(float(jnp.max(jnp.abs(out - reference))) / scale, 0.05)


if __name__ == "__main__":
    absltest.main()
