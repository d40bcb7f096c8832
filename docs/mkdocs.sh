#!/usr/bin/env bash
# Builds or serves the documentation site with MkDocs from the docs virtualenv
# (tools/venv --docs: requirements_docs_lock.txt, separate from the library's).
#
#   tools/bazel run //docs:build            # writes the static site to site/
#   tools/bazel run //docs:serve            # serves it on http://127.0.0.1:8000
#   docs/mkdocs.sh build --strict           # the same without Bazel
set -euo pipefail
ROOT="${BUILD_WORKSPACE_DIRECTORY:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
cd "$ROOT"
PY="$(tools/venv --docs)"
export NO_MKDOCS_2_WARNING=1
exec "$PY" -m mkdocs "$@"
