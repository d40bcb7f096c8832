"""Runs every Python code block of the documentation site.

Each page under docs/ (and its included files are not Python) is read, its
```python fenced blocks are extracted in order and executed in one namespace per
page, so a later block may use names from an earlier one, as a reader would. A
block that raises fails the test naming the page and the block's first line.
Blocks fenced as ```bash, ```mermaid or ```text are not executed.
"""

import os
import pathlib
import re
import unittest

DOCS = pathlib.Path(__file__).resolve().parent
_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(text):
  """The Python blocks of one Markdown page as (line number, source) pairs."""
  return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _FENCE.finditer(text)]


def pages():
  return sorted(p for p in DOCS.rglob("*.md"))


class ExtractTest(unittest.TestCase):

  def test_extracts_blocks_in_order_and_skips_other_languages(self):
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a + 1\n```\n"
    self.assertEqual(python_blocks(text), [(2, "a = 1\n"), (8, "b = a + 1\n")])


class DocBlocksTest(unittest.TestCase):

  def test_site_has_python_blocks(self):
    self.assertTrue(any(python_blocks(p.read_text()) for p in pages()))

  def test_every_python_block_runs(self):
    for page in pages():
      blocks = python_blocks(page.read_text())
      if not blocks:
        continue
      namespace = {"__name__": f"docs.{page.stem}"}
      for line, source in blocks:
        with self.subTest(page=str(page.relative_to(DOCS)), line=line):
          code = compile(source, f"{page.relative_to(DOCS)}:{line}", "exec")
          exec(code, namespace)  # pylint: disable=exec-used


if __name__ == "__main__":
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  unittest.main()
