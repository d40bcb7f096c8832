"""Tests for workshop.models.layers.embedding."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.core import device_manager
from workshop.models.layers.embedding import LabelEmbedding, class_labels, validate_labels


class EmbeddingTest(absltest.TestCase):
    def test_class_labels_of_conditional_and_unconditional_models(self):
        np.testing.assert_array_equal(class_labels(3, 5, 2, model_name="m", unconditional_hint="h"), [3, 3])
        self.assertIsNone(class_labels(None, None, 2, model_name="m", unconditional_hint="h"))
        with self.assertRaisesRegex(ValueError, "^m is unconditional and takes no labels; set num_classes$"):
            class_labels(jnp.array([1, 2]), None, 2, model_name="m", unconditional_hint="set num_classes")
        with self.assertRaisesRegex(ValueError, "m is conditional: labels are required"):
            class_labels(None, 5, 2, model_name="m", unconditional_hint="h")

    def test_lookup_returns_the_rows(self):
        emb = LabelEmbedding(4, 3, rngs=nnx.Rngs(0))
        table = emb.embed.embedding[...]
        np.testing.assert_allclose(emb(jnp.array([2, 0, 2])), table[jnp.array([2, 0, 2])])

    def test_bf16_policy(self):
        previous = device_manager.set_precision_policy(device_manager.PrecisionPolicy(compute_dtype=jnp.bfloat16))
        self.addCleanup(device_manager.set_precision_policy, previous)
        emb = LabelEmbedding(4, 3, rngs=nnx.Rngs(0))
        self.assertEqual(emb(jnp.array([1])).dtype, jnp.bfloat16)
        self.assertEqual(emb.embed.embedding[...].dtype, jnp.float32)

    def test_validate_labels(self):
        np.testing.assert_array_equal(validate_labels(jnp.array([0, 3]), 4, 2), [0, 3])
        np.testing.assert_array_equal(validate_labels(2, 4, 3), [2, 2, 2])
        with self.assertRaisesRegex(ValueError, "labels are required"):
            validate_labels(None, 4, 2, model_name="cvae")
        with self.assertRaisesRegex(ValueError, r"lie in \[0, 4\)"):
            validate_labels(jnp.array([0, 4]), 4, 2)
        with self.assertRaisesRegex(ValueError, "shape"):
            validate_labels(jnp.array([0, 1, 2]), 4, 2)
        with self.assertRaisesRegex(ValueError, "integers"):
            validate_labels(jnp.array([0.0, 1.0]), 4, 2)
        # Under jit values are unknown: the range check is skipped, shapes still checked.
        out = jax.jit(lambda l: validate_labels(l, 4, 2))(jnp.array([1, 2]))
        np.testing.assert_array_equal(out, [1, 2])


if __name__ == "__main__":
    absltest.main()
