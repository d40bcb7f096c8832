"""The BENCHMARKS.md row selection of the model guides (docs/benchmark_rows.py)."""

import pathlib
import unittest

from docs import benchmark_rows

DOCS = pathlib.Path(__file__).resolve().parent
_MARKDOWN = """# Benchmarks

## Speed: `tools/benchmark`

| Config | steps/s |
| --- | --- |
| `vae` (MLP) | 250 |
| `conv_vae` | 3.2 |
| `dcgan` | 7.4 |

Text between tables.

### Runs

| Family | Command | Result |
| --- | --- | --- |
| Glow | `--config=workshop/train/configs/glow.py` | 4.51 bits/dim |
| VAE (default config) | none | a \\| b |
"""


class SelectTest(unittest.TestCase):

  def test_tables_keep_their_headings(self):
    tables = benchmark_rows.tables(_MARKDOWN)
    self.assertEqual([t.heading for t in tables], ["Speed: `tools/benchmark`", "Runs"])
    self.assertEqual([len(t.rows) for t in tables], [3, 2])

  def test_a_config_name_matches_its_backticked_cell_only(self):
    (table,) = benchmark_rows.select(_MARKDOWN, ["vae"])
    self.assertEqual(table.rows, ["| `vae` (MLP) | 250 |"])  # not `conv_vae`

  def test_config_paths_and_quoted_first_cells_match(self):
    selected = benchmark_rows.select(_MARKDOWN, ["glow", "VAE (default config)"])
    self.assertEqual(len(selected), 1)
    self.assertEqual([r.split("|")[1].strip() for r in selected[0].rows], ["Glow", "VAE (default config)"])

  def test_render_links_each_table_to_its_section(self):
    text = benchmark_rows.render(_MARKDOWN, ["dcgan"], "../benchmarks.md")
    self.assertEqual(text, "From [Speed: tools/benchmark](../benchmarks.md#speed-toolsbenchmark):\n\n"
                     "| Config | steps/s |\n| --- | --- |\n| `dcgan` | 7.4 |")

  def test_a_directive_without_rows_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "no row of BENCHMARKS.md names any of \\['nonexistent'\\]"):
      benchmark_rows.expand("<!-- benchmarks: nonexistent -->\n", _MARKDOWN, "b.md")

  def test_slugify_matches_the_toc_extension(self):
    self.assertEqual(benchmark_rows.slugify("Sample quality (quality mode)"), "sample-quality-quality-mode")
    self.assertEqual(benchmark_rows.slugify("GPU check: `tools/gpu_check`"), "gpu-check-toolsgpu_check")


class GuidesTest(unittest.TestCase):

  def test_every_directive_of_the_site_finds_rows_in_benchmarks_md(self):
    benchmarks = (DOCS.parent / "BENCHMARKS.md").read_text()
    directives = 0
    for page in sorted(DOCS.rglob("*.md")):
      text = page.read_text()
      directives += len(benchmark_rows.DIRECTIVE.findall(text))
      expanded = benchmark_rows.expand(text, benchmarks, "../benchmarks.md")
      self.assertNotIn("<!-- benchmarks:", expanded, page)
    self.assertGreaterEqual(directives, 6)  # one per model guide


if __name__ == "__main__":
  unittest.main()
