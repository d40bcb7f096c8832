"""`train_and_sample` on tiny IDX data: the test NLL falls and the samples look like the data."""

import tempfile

from absl.testing import absltest
import numpy as np

from vae_app.tiny_data import write_two_shapes
from vae_app.train_and_sample import train_and_sample


class TrainAndSampleTest(absltest.TestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.data_dir = write_two_shapes(tempfile.mkdtemp())
        cls.result = train_and_sample(cls.data_dir, steps=150, batch_size=32, num_samples=64)

    def test_training_lowers_the_test_nll(self):
        r = self.result
        # Untrained: ~784 ln 2 = 543 nats for 784 Bernoulli pixels near p = 1/2.
        self.assertGreater(r.test_nll_before, 400.0)
        # Trained: near the floor set by the binarisation noise, 392 bright pixels x 0.318
        # nats + 392 dark ones x 0.258 = 226 nats (plus the class bit and the bound's gap).
        self.assertLess(r.test_nll_after, 300.0)
        self.assertGreater(r.test_nll_after, 226.0)
        self.assertLess(r.train_losses[-1], r.train_losses[0])

    def test_samples_look_like_the_training_images(self):
        samples = self.result.samples
        self.assertEqual(samples.shape, (64, 28, 28, 1))
        self.assertTrue(np.all(np.isfinite(samples)))
        self.assertTrue(np.all((samples >= 0.0) & (samples <= 1.0)))
        # Pixel means of the data: bright 227/255 = 0.89, dark 20/255 = 0.08. The top-left
        # quadrant is bright in both classes, the bottom-right in neither, the other two in
        # one class of two (0.49). An untrained decoder gives ~1/2 everywhere (no contrast).
        mean = samples[..., 0].mean(axis=0)
        top_left, top_right = mean[:14, :14].mean(), mean[:14, 14:].mean()
        bottom_left, bottom_right = mean[14:, :14].mean(), mean[14:, 14:].mean()
        self.assertGreater(top_left - bottom_right, 0.4)
        np.testing.assert_allclose([top_right, bottom_left], [0.49, 0.49], atol=0.1)


if __name__ == "__main__":
    absltest.main()
