"""MkDocs hook: serves MathJax from the docs virtualenv, so the site's math renders offline.

`pymdownx.arithmatex` (generic mode) leaves the TeX of every formula in the
page for MathJax to typeset in the browser. Instead of a CDN, the site carries
MathJax 3's single-file TeX-to-SVG component (`es5/tex-svg.js`, no web fonts
needed) from the `django-static-mathjax` package of requirements_docs.in,
added to the site as `javascripts/mathjax/tex-svg.js` for `mkdocs build` and
`mkdocs serve` alike, with MathJax's licence beside it. Registered in
mkdocs.yml under `hooks:`; `extra_javascript` loads the settings
(`javascripts/mathjax.js`) and then this file.
"""

from __future__ import annotations

import importlib.util
import pathlib

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

SITE_DIR = "javascripts/mathjax"
_FILES = {"tex-svg.js": "es5/tex-svg.js", "LICENSE": "LICENSE"}


def mathjax_dir() -> pathlib.Path:
  """The MathJax distribution inside the installed `django-static-mathjax` package."""
  spec = importlib.util.find_spec("mathjax")
  if spec is None or not spec.submodule_search_locations:
    raise PluginError("MathJax is missing from the docs virtualenv: django-static-mathjax is in "
                      "requirements_docs.in; rebuild the virtualenv with tools/venv --docs")
  return pathlib.Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"


def on_files(files, *, config):
  root = mathjax_dir()
  for name, relative in _FILES.items():
    source = root / relative
    if not source.is_file():
      raise PluginError(f"{source} is missing from the django-static-mathjax package")
    files.append(File.generated(config, f"{SITE_DIR}/{name}", abs_src_path=str(source)))
  return files
