"""Tests for workshop.eval.inception: block shapes, and the pytorch-fid weight mapping on a random file."""

import pathlib
import tempfile

import jax
import numpy as np
from absl.testing import absltest
from flax import nnx

from workshop.eval.inception import FIDInceptionV3, inception_state_dict, load_inception


def _random_state_dict(seed=0):
    """A file in pytorch-fid's format: its names and layouts, random values, plus the unused keys."""
    rng = np.random.default_rng(seed)
    model = nnx.eval_shape(lambda: FIDInceptionV3(rngs=nnx.Rngs(1), resize_input=False))
    out = {}
    for name, value in inception_state_dict(model).items():
        if name.endswith("running_var"):
            out[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        else:
            out[name] = (0.1 * rng.normal(size=value.shape)).astype(np.float32)
    out["fc.weight"] = np.zeros((1008, 2048), np.float32)
    out["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.zeros((), np.int64)
    return out


class InceptionTest(absltest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.weights = _random_state_dict()
        cls.path = pathlib.Path(tempfile.mkdtemp()) / "pt_inception_fid.npz"
        np.savez(cls.path, **cls.weights)
        cls.model = load_inception(cls.path, resize_input=False)

    def test_block_shapes_at_299(self):
        model = nnx.eval_shape(lambda: FIDInceptionV3(rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(model)
        shapes = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).feature_maps(x), state,
                                jax.ShapeDtypeStruct((2, 28, 28, 1), np.float32))
        self.assertEqual(shapes["stem"].shape, (2, 35, 35, 192))
        self.assertEqual(shapes["mixed_5d"].shape, (2, 35, 35, 288))
        self.assertEqual(shapes["mixed_6e"].shape, (2, 17, 17, 768))
        self.assertEqual(shapes["mixed_7c"].shape, (2, 8, 8, 2048))
        pool3 = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s).features(x), state,
                               jax.ShapeDtypeStruct((2, 32, 32, 3), np.float32))
        self.assertEqual(pool3.shape, (2, 2048))

    def test_weight_mapping(self):
        weights, model = self.weights, self.model
        # Every array lands where it came from (round trip through the loader).
        back = inception_state_dict(model)
        self.assertEqual(set(back), set(weights) - {"fc.weight", "Conv2d_1a_3x3.bn.num_batches_tracked"})
        for name, value in back.items():
            np.testing.assert_array_equal(value, weights[name], err_msg=name)
        # The first convolution against a hand-written PyTorch-layout one: W[o, i, kh, kw], stride 2, no padding.
        x = np.random.default_rng(2).uniform(-1, 1, (1, 5, 5, 3)).astype(np.float32)
        w = weights["Conv2d_1a_3x3.conv.weight"]
        expected = np.einsum("oihw,hwi->o", w, x[0, 2:5, 2:5])  # output pixel (1, 1)
        got = np.asarray(model.Conv2d_1a_3x3.conv(x))[0, 1, 1]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        bn = model.Mixed_7c.branch_pool.bn
        np.testing.assert_array_equal(np.asarray(bn.var[...]), weights["Mixed_7c.branch_pool.bn.running_var"])
        np.testing.assert_array_equal(np.asarray(bn.scale[...]), weights["Mixed_7c.branch_pool.bn.weight"])

    def test_small_input_features_and_errors(self):
        model = self.model
        x = np.random.default_rng(4).uniform(0, 1, (2, 75, 75, 1)).astype(np.float32)
        features = np.asarray(nnx.jit(lambda m, x: m.features(x))(model, x))
        self.assertEqual(features.shape, (2, 2048))
        self.assertTrue(np.all(features >= 0))  # a mean of ReLU outputs
        self.assertGreater(np.abs(features[0] - features[1]).max(), 0)
        weights = dict(self.weights)
        del weights["Mixed_6b.branch1x1.bn.running_mean"]
        path = pathlib.Path(tempfile.mkdtemp()) / "incomplete.npz"
        np.savez(path, **weights)
        with self.assertRaisesRegex(ValueError, "Mixed_6b.branch1x1.bn.running_mean"):
            load_inception(path)
        with self.assertRaisesRegex(FileNotFoundError, "never downloads"):
            load_inception(path.with_name("absent.npz"))


if __name__ == "__main__":
    absltest.main()
