"""MkDocs hook: a page shows BENCHMARKS.md's rows about its configs, read at build time.

A model guide writes a directive on a line of its own,

    <!-- benchmarks: vae conv_vae "VAE (default config)" -->

and the build replaces it with every table of BENCHMARKS.md cut down to the
rows that name one of those configs (a cell holding `` `vae` ``, a
`configs/vae.py` path, or a cell equal to a quoted phrase), each under a link
to its section on the Benchmarks page. The figures are never copied into the
guides, so they cannot drift from BENCHMARKS.md; a directive that matches no
row stops the build. Registered in mkdocs.yml under `hooks:`; this module
imports nothing from MkDocs, so its test runs in the library's virtualenv.
"""

from __future__ import annotations

import dataclasses
import pathlib
import posixpath
import re
import shlex
import unicodedata

DIRECTIVE = re.compile(r"^<!-- benchmarks: (.+?) -->$", re.MULTILINE)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CELL_SPLIT = re.compile(r"(?<!\\)\|")


@dataclasses.dataclass
class Table:
  """One Markdown table of BENCHMARKS.md: its section heading, header lines and body rows."""

  heading: str
  header: list[str]
  rows: list[str]


def slugify(heading: str) -> str:
  """The anchor Python-Markdown's toc extension gives `heading` (inline code unwrapped)."""
  value = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode()
  value = re.sub(r"[^\w\s-]", "", value).strip().lower()
  return re.sub(r"[-\s]+", "-", value)


def tables(markdown: str) -> list[Table]:
  """Every pipe table of `markdown`, in order, with the heading above it."""
  found, heading, lines = [], "", markdown.splitlines()
  i = 0
  while i < len(lines):
    match = _HEADING.match(lines[i])
    if match:
      heading = match.group(2)
    is_table = (lines[i].startswith("|") and i + 1 < len(lines)
                and re.match(r"^\|\s*:?-{3,}", lines[i + 1]))
    if not is_table:
      i += 1
      continue
    start = i
    i += 2
    while i < len(lines) and lines[i].startswith("|"):
      i += 1
    found.append(Table(heading, lines[start:start + 2], lines[start + 2:i]))
  return found


def _cells(row: str) -> list[str]:
  return [c.strip() for c in _CELL_SPLIT.split(row.strip().strip("|"))]


def row_names(row: str, name: str) -> bool:
  """Whether a table row is about config `name` (or, for a phrase with spaces, has it as a cell)."""
  cells = _cells(row)
  if name in cells:
    return True
  if " " in name:
    return False
  code = re.compile(r"(^|[\s(])`" + re.escape(name) + r"`($|[\s),*])")
  return f"configs/{name}.py" in row or any(code.search(c) for c in cells)


def select(markdown: str, names: list[str]) -> list[Table]:
  """The tables of `markdown` that have rows naming one of `names`, cut down to those rows."""
  out = []
  for table in tables(markdown):
    rows = [r for r in table.rows if any(row_names(r, n) for n in names)]
    if rows:
      out.append(Table(table.heading, table.header, rows))
  return out


def render(markdown: str, names: list[str], benchmarks_link: str) -> str:
  """Markdown for one directive: each selected table under a link to its section."""
  selected = select(markdown, names)
  if not selected:
    raise ValueError(f"no row of BENCHMARKS.md names any of {names} (the names of a "
                     "'<!-- benchmarks: ... -->' directive are config names or quoted first cells)")
  parts = []
  for table in selected:
    title = table.heading.replace("`", "")
    parts.append(f"From [{title}]({benchmarks_link}#{slugify(table.heading)}):\n\n"
                 + "\n".join(table.header + table.rows))
  return "\n\n".join(parts)


def expand(page_markdown: str, benchmarks: str, benchmarks_link: str) -> str:
  """`page_markdown` with every directive replaced by its rows."""
  return DIRECTIVE.sub(lambda m: render(benchmarks, shlex.split(m.group(1)), benchmarks_link), page_markdown)


def on_page_markdown(markdown, *, page, config, files):  # pylint: disable=unused-argument
  """MkDocs hook entry point (mkdocs.yml `hooks:`)."""
  if not DIRECTIVE.search(markdown):
    return markdown
  root = pathlib.Path(config["config_file_path"]).resolve().parent
  benchmarks = (root / "BENCHMARKS.md").read_text()
  link = posixpath.relpath("benchmarks.md", posixpath.dirname(page.file.src_uri) or ".")
  try:
    return expand(markdown, benchmarks, link)
  except ValueError as e:
    raise ValueError(f"{page.file.src_uri}: {e}") from e
