"""The checked-in parameter tables match the registry's schemas and are all shown."""

import pathlib
import re
import typing
import unittest

from docs import parameter_tables
from workshop.core import registry

DOCS = pathlib.Path(__file__).resolve().parent
_INCLUDE = re.compile(r'^--8<-- "docs/(models/parameters/[^"]+\.md)"$', re.MULTILINE)


class FormatTest(unittest.TestCase):

  def test_type_spellings(self):
    self.assertEqual(parameter_tables.format_type(typing.Literal["a", "b"]), "one of 'a', 'b'")
    self.assertEqual(parameter_tables.format_type(typing.Optional[int]), "int or None")
    self.assertEqual(parameter_tables.format_type(list[int]), "list[int]")

  def test_vae_table_rows(self):
    text = parameter_tables.table("vae")
    self.assertIn("| `beta` | float >= 0.0 | `1.0` | weight of the KL term (beta-VAE) |", text)
    # beta-vae's schema overrides only the default of beta.
    self.assertIn("| `beta` | float >= 0.0 | `4.0` |", parameter_tables.table("beta-vae"))

  def test_pipes_in_descriptions_are_escaped(self):
    self.assertIn("\\|E\\| above this", parameter_tables.table("ebm"))


class CheckedInTablesTest(unittest.TestCase):

  def test_tables_match_the_schemas(self):
    self.assertEqual(parameter_tables.stale_tables(), [],
                     "rerun: JAX_PLATFORMS=cpu PYTHONPATH=. python3 docs/parameter_tables.py")

  def test_every_model_type_is_shown_on_a_guide_page(self):
    included = set()
    for page in (DOCS / "models").glob("*.md"):
      included.update(_INCLUDE.findall(page.read_text()))
    missing = [t for t in registry.registered_model_types() if f"models/parameters/{t}.md" not in included]
    self.assertEqual(missing, [], "model types whose parameter table no page under docs/models/ includes")


if __name__ == "__main__":
  unittest.main()
