"""Tests for the diffusion loop-overhead benchmark (tools/benchmark/diffusion_sampling.py); no timing assertions."""

import numpy as np
from absl.testing import absltest
from flax import nnx

from tools.benchmark.diffusion_sampling import format_result, measure_config, measure_sampling_overhead
from workshop.core.configuration import ModelConfiguration
from workshop.models.diffusion import DDPM, EDM, FlowMatching

_DIT = dict(patch_size=4, hidden_size=16, depth=1, num_heads=2, sampling_steps=4)


class DiffusionSamplingTest(absltest.TestCase):
    def test_measures_both_sides_of_a_tiny_model(self):
        model = DDPM(ModelConfiguration(model_type="ddpm", input_shape=(8, 8, 1), num_timesteps=20,
                                        backbone_type="dit",
                                        parameters=dict(patch_size=4, hidden_size=16, depth=1, num_heads=2,
                                                        sampling_steps=4)),
                     rngs=nnx.Rngs(0))
        r = measure_sampling_overhead(model, batch_size=2, steps=4, repeats=1)
        self.assertEqual((r["sampler"], r["steps"], r["batch_size"], r["backbone"]), ("ddim", 4, 2, "dit"))
        for key in ("sampling_seconds", "forwards_seconds", "ratio", "forward_gflop"):
            self.assertTrue(np.isfinite(r[key]) and r[key] > 0, key)
        np.testing.assert_allclose(r["forward_seconds"] * 4, r["forwards_seconds"])
        np.testing.assert_allclose(r["ratio"], r["sampling_seconds"] / r["forwards_seconds"])
        self.assertIn("| ddpm (dit) | ddim, 4, 2 | 4 |", format_result(r))

    def test_continuous_models_count_their_network_evaluations(self):
        # NFE as the models report it: Heun on flow matching two per step, EDM's Heun 2 N - 1.
        for cls, model_type, sampler, steps, nfe in ((FlowMatching, "flow_matching", "heun", 3, 6),
                                                     (FlowMatching, "flow_matching", "euler", 3, 3),
                                                     (EDM, "edm", "heun", 3, 5)):
            model = cls(ModelConfiguration(model_type=model_type, input_shape=(8, 8, 1), backbone_type="dit",
                                           parameters=_DIT), rngs=nnx.Rngs(0))
            r = measure_sampling_overhead(model, batch_size=2, steps=steps, sampler=sampler, repeats=1)
            self.assertEqual((r["sampler"], r["nfe"]), (sampler, nfe), model_type)
            np.testing.assert_allclose(r["forward_seconds"] * nfe, r["forwards_seconds"])

    def test_bad_input(self):
        with self.assertRaisesRegex(TypeError, "not a diffusion model"):
            measure_sampling_overhead(object())
        with self.assertRaisesRegex(ValueError, "family 'vae'.*ddpm_unet"):
            measure_config("vae")
        with self.assertRaisesRegex(ValueError, "no config workshop/train/configs/nope.py"):
            measure_config("nope")


if __name__ == "__main__":
    absltest.main()
