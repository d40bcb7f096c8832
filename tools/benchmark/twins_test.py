"""Smoke test of the twins benchmark: a few steps of every side but PyTorch (timings are not checked)."""

import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from tools.benchmark import twins


class TwinsTest(parameterized.TestCase):
    @parameterized.parameters(("vae", 8), ("conv_vae", 4))
    def test_a_case_runs_without_torch(self, config, batch_size):
        torch_module, note = twins.import_torch(None, enabled=False)
        self.assertIsNone(torch_module)
        self.assertIn("skipped", note)
        result = twins.run_case(config, batch_size, rounds=1, seconds=0.0, torch_module=None, torch_note=note,
                                min_steps=2)
        # The twin is the config's network: same parameter count as Workshop's model.
        self.assertEqual(result["twin_parameters"]["plain JAX"], result["parameters"])
        if config == "vae":
            self.assertEqual(result["parameters"], 1_091_920)
        else:
            self.assertEqual(result["upsampling"], "subpixel")
        self.assertEqual(set(result["seconds_per_step"]), {"Trainer.fit", "Workshop step", "plain JAX"})
        for value in [*result["ratios"].values(), result["flops_per_step"]]:
            self.assertTrue(np.isfinite(value) and value > 0, result)
        table = twins.format_markdown([result]).splitlines()
        self.assertLen(table, 3)
        self.assertIn("skipped", table[2])  # the PyTorch column

    def test_the_plain_jax_twin_learns(self):
        step, state, count = twins.jax_twin("vae", "subpixel")
        self.assertEqual(count, 1_091_920)
        x = jnp.asarray(twins.binarised_batches(64, 1)[0])
        losses = []
        for _ in range(30):
            state, loss = step(state, x)
            losses.append(float(loss))
        self.assertTrue(np.isfinite(losses).all())
        self.assertLess(losses[-1], 0.7 * losses[0])

    def test_bad_cases_are_explained(self):
        with self.assertRaisesRegex(Exception, "expected vae:<batch> or conv_vae:<batch>"):
            twins.parse_cases(["glow:32"])
        self.assertEqual(twins.parse_cases(["vae:64", "conv_vae:128"]), [("vae", 64), ("conv_vae", 128)])


if __name__ == "__main__":
    jax.config.parse_flags_with_absl()
    absltest.main()
