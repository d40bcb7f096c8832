"""Tests for the benchmark's model selection and tables (the measurements themselves are timed runs)."""

from absl.testing import absltest

from tools.benchmark import benchmark
from tools.benchmark.quality import format_quality_table
from workshop.core import registry
from workshop.models import factories  # noqa: F401 - registers every family


class BenchmarkTest(absltest.TestCase):
    def test_all_is_one_reference_config_per_registered_family(self):
        models = benchmark.resolve_models("all")
        families = [benchmark._family_of(m) for m in models]
        self.assertEqual(sorted(families), sorted(f for f in registry.FAMILIES if registry.registered_model_types(f)))
        self.assertEqual(benchmark.resolve_models(" vae, dcgan "), ["vae", "dcgan"])

    def test_markdown_rows(self):
        row = dict(model="vae", family="vae", batch_size=128, compile_seconds=1.0, trainer_steps_per_second=250.0,
                   trainer_examples_per_second=32000.0, bare_jit_steps_per_second=260.0, trainer_vs_bare_jit=0.96,
                   flops_per_step=0.768e9, achieved_gflops=192.0, share_of_matmul_peak=0.425,
                   matmul_peak_gflops=451.0, samples_per_second=220000.0, peak_memory_mib=706.0,
                   loop_sampler="ddim", loop_steps=50, loop_nfe=50, loop_batch_size=64, loop_seconds=2.5,
                   loop_vs_forwards=1.02)
        table = benchmark.format_markdown([row, {"model": "glow", "family": "flow", "error": "boom"}]).splitlines()
        self.assertLen(table, 4)
        self.assertEqual(table[0].count("|"), table[2].count("|"))
        self.assertIn("| 250.0 | 32,000 |", table[2])
        self.assertIn("42.5 % of 451", table[2])
        self.assertIn("1.020 x 50 forwards", table[2])
        self.assertIn("error: boom", table[3])

    def test_quality_table(self):
        row = dict(model="vae", family="vae", steps=300, batch_size=128, train_seconds=12.0, nll_bits_per_dim=0.5,
                   estimate="importance-weighted bound", num_examples=1000, fid=12.345, kid=0.0123, kid_std=0.001,
                   precision=0.5, recall=0.25, density=0.4, coverage=0.3, num_samples=2000)
        gan = {**row, "model": "dcgan", "family": "gan"}
        del gan["nll_bits_per_dim"]
        lines = format_quality_table([row, gan]).splitlines()
        self.assertIn("0.500 (importance-weighted bound, 1000 images) | 12.35 | 0.0123 +- 0.001 |", lines[2])
        self.assertIn("n/a (no likelihood)", lines[3])


if __name__ == "__main__":
    absltest.main()
