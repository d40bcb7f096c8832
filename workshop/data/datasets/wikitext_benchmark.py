"""Shows that streaming a MediaWiki dump keeps memory flat as the dump grows.

Writes generated `pages-articles` dumps of `--sizes_mb` (articles with
templates, links, refs and tables, plus redirects and talk pages), then streams
each through `iter_mediawiki_dump` in a fresh process and reports its peak
resident memory and articles/s:

    tools/bazel run //workshop/data/datasets:wikitext_benchmark -- --sizes_mb=30,150
    # the compressed form Wikimedia publishes (`.xml.bz2`), compressed here first:
    tools/bazel run //workshop/data/datasets:wikitext_benchmark -- --sizes_mb=25,100 --bz2

The dump MB column is the uncompressed XML size; peak RSS is the streaming
process's whole resident set (Python, numpy and the parser included), so a
flat column across sizes is the claim.
"""

from __future__ import annotations

import bz2
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from xml.sax.saxutils import escape

from absl import app
from absl import flags

from workshop.data.datasets.wikitext import iter_mediawiki_dump

_SIZES_MB = flags.DEFINE_list("sizes_mb", ["30", "150"], "Dump sizes to generate, in MB.")
_BZ2 = flags.DEFINE_bool("bz2", False, "Compress each dump to .xml.bz2 and stream that instead.")
_STREAM = flags.DEFINE_string("stream", None, "Internal: stream this dump and print stats.")

_BODY = (
    "{{Infobox thing|name=Item %d|image=[[File:X%d.jpg|thumb|A [[caption]]]]|era={{nowrap|19th}}}}\n"
    "'''Item %d''' is a [[topic|subject]] studied since %d.<ref>{{cite book|last=Doe|year=%d}}</ref> "
    "It relates to [[Physics]] and ''chemistry'' [https://example.org link].\n\n== History ==\n"
    "{| class=\"wikitable\"\n|-\n| a || b\n|}\n" + "Plain prose sentence number %d about the article. " * 20 + "\n"
    "[[Category:Things]]\n"
)


def _page(i: int, title: str, ns: int, text: str) -> str:
    return (
        f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{i}</id>\n"
        f"    <revision>\n      <id>{i}</id>\n      <text xml:space=\"preserve\">{escape(text)}</text>\n"
        "    </revision>\n  </page>\n"
    )


def write_dump(path: str, size_mb: int) -> int:
    """Writes a dump of about `size_mb` MB; returns its number of articles."""
    articles = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11">\n')
        i = 0
        while f.tell() < size_mb * 2**20:
            i += 1
            if i % 10 == 0:
                f.write(_page(i, f"Redirect {i}", 0, "#REDIRECT [[Item 1]]"))
            elif i % 10 == 5:
                f.write(_page(i, f"Talk:Item {i}", 1, "Talk text " * 50))
            else:
                f.write(_page(i, f"Item {i}", 0, _BODY % ((i,) * 5 + (i,) * 20)))
                articles += 1
        f.write("</mediawiki>\n")
    return articles


def _stream(path: str) -> None:
    start = time.perf_counter()
    count = chars = 0
    for article in iter_mediawiki_dump(path):
        count += 1
        chars += len(article.text)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{count} {chars} {seconds:.3f} {peak_mb:.1f}")


def main(argv: list[str]) -> None:
    del argv
    if _STREAM.value:
        _stream(_STREAM.value)
        return
    with tempfile.TemporaryDirectory() as folder:
        print("dump MB | articles | peak RSS MB | articles/s | MB/s")
        for size in map(int, _SIZES_MB.value):
            path = os.path.join(folder, f"bench-{size}-pages-articles.xml")
            expected = write_dump(path, size)
            mb = os.path.getsize(path) / 2**20
            if _BZ2.value:
                with open(path, "rb") as src, bz2.open(path + ".bz2", "wb") as dst:
                    shutil.copyfileobj(src, dst, 2**20)
                os.remove(path)
                path += ".bz2"
            out = subprocess.run(
                [sys.executable, __file__, f"--stream={path}"], check=True, capture_output=True, text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            ).stdout.split()
            count, _, seconds, peak = int(out[0]), int(out[1]), float(out[2]), float(out[3])
            assert count == expected, (count, expected)
            print(f"{mb:7.0f} | {count:8d} | {peak:11.1f} | {count / seconds:10.0f} | {mb / seconds:4.1f}")
            os.remove(path)


if __name__ == "__main__":
    app.run(main)
