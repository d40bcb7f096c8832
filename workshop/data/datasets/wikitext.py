"""Wikipedia articles from a MediaWiki XML dump or WikiExtractor JSONL, as plain text.

Formats:

* MediaWiki XML export (https://www.mediawiki.org/xml/export-0.11.xsd), the
  `*-pages-articles*.xml[.bz2]` files of https://dumps.wikimedia.org: one
  `<page>` per page with `<title>`, `<ns>` (0 = article), `<id>`, an optional
  `<redirect title=...>` and `<revision><text>` holding wikitext. Dumps are
  tens of GB, so `iter_mediawiki_dump` streams them with
  `xml.etree.ElementTree.iterparse` (through `bz2` for `.bz2`, which also reads
  the multistream dumps) and frees each page once read: memory stays flat.
* WikiExtractor `--json` output (Attardi, https://github.com/attardi/wikiextractor):
  one JSON object a line with "id", "url", "title" and "text" (already plain text).

`strip_wiki_markup` turns wikitext into prose the way WikiExtractor does in
spirit: templates `{{...}}` (nested), tables `{|...|}`, `<ref>` notes, comments,
files, categories and interlanguage links are dropped; `[[target|label]]` keeps
its label, `[url label]` its label; bold/italic quotes, heading `=` signs, list
markers, HTML tags and entities are removed. Only markup goes: a `<...>` that
is not a tag MediaWiki allows (`x < y > z`, `<not a tag>`) stays, and the
space before punctuation or an empty `()` is tidied only where markup was
dropped there (`anarkhia ({{lang|..}}),` -> `anarkhia,`), never in prose
(`the .NET Framework`, `printf()`).
"""

from __future__ import annotations

import bz2
import dataclasses
import html
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from workshop.data.idx import DatasetFormatError

__all__ = ["Article", "iter_mediawiki_dump", "iter_wikiextractor_jsonl", "strip_wiki_markup"]

_DUMP_FORMAT = "expected a MediaWiki XML dump (pages-articles*.xml or .xml.bz2)"
_JSONL_FORMAT = 'expected WikiExtractor JSONL (one {"id", "title", "text"} object a line)'

# Link namespaces whose target is not prose (English names and the generic ones).
_DROPPED_LINK_PREFIXES = ("file", "image", "media", "category")
_INTERLANGUAGE = re.compile(r"^:?[a-z]{2,3}(-[a-z]+)?:")
_DROPPED_TAGS = ("math", "gallery", "imagemap", "timeline", "score", "graph", "chem", "hiero", "references")

_COMMENT = re.compile(r"<!--.*?(-->|\Z)", re.DOTALL)
_REF_SELF_CLOSING = re.compile(r"<ref\b[^>]*/\s*>", re.IGNORECASE)
_REF = re.compile(r"<ref\b[^>]*>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
_DROPPED_ELEMENTS = re.compile(
    r"<(%s)\b[^>]*>.*?</\1\s*>" % "|".join(_DROPPED_TAGS), re.IGNORECASE | re.DOTALL
)
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+(?:\s+([^\]]*))?\]")
_BOLD_ITALIC = re.compile(r"'{2,5}")
_HEADING = re.compile(r"^(={1,6})[ \t]*(.*?)[ \t]*\1[ \t]*$", re.MULTILINE)
_LIST_MARKER = re.compile(r"^[*#:;]+[ \t]*", re.MULTILINE)
_RULE = re.compile(r"^-{4,}[ \t]*$", re.MULTILINE)
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
# The HTML tags MediaWiki's sanitizer lets through, and its extension tags
# (https://www.mediawiki.org/wiki/Help:HTML_in_wikitext, Parser extension tags).
_TAG_NAMES = (
    "abbr b bdi bdo big blockquote br caption center cite code data dd del dfn div dl dt em font "
    "h1 h2 h3 h4 h5 h6 hr i ins kbd li mark ol p pre q rb rp rt rtc ruby s samp small span strike "
    "strong sub sup table td th time tr tt u ul var wbr "
    "categorytree ce chem gallery graph hiero imagemap includeonly indicator inputbox mapframe maplink "
    "math noinclude nowiki onlyinclude poem ref references score section source syntaxhighlight "
    "templatedata templatestyles timeline"
).split()
_TAG = re.compile(r"</?(?:%s)(?:\s[^<>]*)?/?>" % "|".join(sorted(_TAG_NAMES, key=len, reverse=True)), re.IGNORECASE)
# `_DROPPED` marks where markup was removed, so the tidying below touches only
# those places; it is a private-use character, removed from the input first.
_DROPPED = "\ue000"
_EMPTY_PARENS = re.compile(r"\([\s,;%s]*\)" % _DROPPED)  # Emptied only if it holds a mark: see below.
_LEADING_PUNCT_IN_PARENS = re.compile(r"\(\s*%s[\s%s]*[,;]\s*" % (_DROPPED, _DROPPED))
_SPACE_BEFORE_PUNCT = re.compile(r"[ \t]*%s[ \t%s]*(?=[,.;:!?)])" % (_DROPPED, _DROPPED))
_SPACES = re.compile(r"[ \t\xa0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


@dataclasses.dataclass(frozen=True)
class Article:
    """One article: its page id, title and plain text."""

    id: str
    title: str
    text: str


def _drop_balanced(text: str, opener: str, closer: str, mark: str = "") -> str:
    """Replaces every outermost `opener ... closer` span with `mark`, counting nesting.

    A closer with no opener is kept as text; an opener never closed drops the
    rest of the text (MediaWiki would show it raw, but it is markup, not prose).
    """
    pieces, depth, start = [], 0, 0
    for match in re.finditer(re.escape(opener) + "|" + re.escape(closer), text):
        if match.group() == opener:
            if depth == 0:
                pieces.append(text[start:match.start()])
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                start = match.end()
    if depth == 0:
        pieces.append(text[start:])
    return mark.join(pieces)


def _link_text(match: re.Match) -> str:
    target, _, label = match.group(1).partition("|")
    target = target.strip()
    prefix = target.lstrip(":").split(":", 1)[0].strip().lower() if ":" in target else ""
    if prefix in _DROPPED_LINK_PREFIXES and not target.startswith(":"):
        return _DROPPED  # [[File:...]] images, [[Category:...]]; [[:Category:X]] is a visible link.
    if _INTERLANGUAGE.match(target) and not target.startswith(":"):
        return _DROPPED  # [[de:Anarchismus]]
    if "|" in match.group(1):
        if label.strip():
            return label.rsplit("|", 1)[-1]
        return re.sub(r"\s*\([^)]*\)$", "", target.split(":", 1)[-1])  # The pipe trick: [[Paris (band)|]].
    return target.lstrip(":")


def strip_wiki_markup(wikitext: str) -> str:
    """Plain prose from MediaWiki wikitext.

    Args:
      wikitext: the `<text>` of a page revision (XML entities already decoded).

    Returns:
      The text with markup removed, headings kept as their own lines,
      paragraphs separated by one blank line.
    """
    text = _COMMENT.sub("", wikitext.replace(_DROPPED, ""))
    text = _REF_SELF_CLOSING.sub(_DROPPED, text)
    text = _REF.sub(_DROPPED, text)
    text = _DROPPED_ELEMENTS.sub(_DROPPED, text)
    text = _drop_balanced(text, "{{", "}}", _DROPPED)
    text = _drop_balanced(text, "{|", "|}", _DROPPED)
    # Innermost links first, so that a caption's [[link]] resolves before its [[File:...]].
    while True:
        text, count = _INNER_LINK.subn(_link_text, text)
        if not count:
            break
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1) or _DROPPED, text)
    text = _BOLD_ITALIC.sub("", text)
    text = _HEADING.sub(r"\2", text)
    text = _LIST_MARKER.sub("", text)
    text = _RULE.sub("", text)
    text = _MAGIC_WORD.sub(_DROPPED, text)
    text = _TAG.sub(_DROPPED, text)
    text = html.unescape(text)  # &nbsp; &ndash; ... (the XML layer already decoded &lt; &amp;).
    # "({{lang|..}})": parentheses emptied by markup go; "printf()" stays.
    text = _EMPTY_PARENS.sub(lambda m: _DROPPED if _DROPPED in m.group() else m.group(), text)
    text = _LEADING_PUNCT_IN_PARENS.sub("(", text)  # "({{IPA|..}}; born 1950)" -> "(born 1950)".
    text = _SPACE_BEFORE_PUNCT.sub("", text)  # "word {{cite}}." -> "word.", not "the .NET" -> "the.NET".
    text = _SPACES.sub(" ", text.replace(_DROPPED, ""))
    lines = [line.strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _open_dump(path: str | os.PathLike):
    return bz2.open(path, "rb") if os.fspath(path).endswith(".bz2") else open(path, "rb")


def iter_mediawiki_dump(
    path: str | os.PathLike, *, namespaces: tuple[str, ...] = ("0",), strip_markup: bool = True
) -> Iterator[Article]:
    """Streams the articles of a MediaWiki XML dump, one page in memory at a time.

    Redirect pages (`<redirect>` or text starting `#REDIRECT`) and pages of
    other namespaces (Talk, User, Template, ...) are skipped.

    Args:
      path: a `*.xml` or `*.xml.bz2` dump.
      namespaces: the `<ns>` values kept; "0" is the article namespace.
      strip_markup: apply `strip_wiki_markup` to each text.

    Yields:
      `Article`s in dump order.

    Raises:
      FileNotFoundError: no such file.
      DatasetFormatError: the XML or bz2 stream is malformed or truncated; the
        message names the file and how many articles were read before.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MediaWiki dump not found: {os.fspath(path)} ({_DUMP_FORMAT})")
    count = 0
    try:
        with _open_dump(path) as stream:
            root = None
            for event, elem in ET.iterparse(stream, events=("start", "end")):
                if root is None:
                    root = elem
                    if _local(root.tag) != "mediawiki":
                        raise DatasetFormatError(f"{os.fspath(path)}: {_DUMP_FORMAT}; the root element is <{_local(root.tag)}>")
                if event != "end" or _local(elem.tag) != "page":
                    continue
                fields = {_local(child.tag): child for child in elem}
                revision = fields.get("revision")
                text_elem = None
                if revision is not None:
                    text_elem = next((c for c in revision if _local(c.tag) == "text"), None)
                wikitext = (text_elem.text or "") if text_elem is not None else ""
                ns = fields["ns"].text if "ns" in fields else "0"
                is_redirect = "redirect" in fields or wikitext.lstrip()[:9].upper() == "#REDIRECT"
                if ns in namespaces and not is_redirect:
                    count += 1
                    yield Article(
                        id=fields["id"].text if "id" in fields else "",
                        title=fields["title"].text if "title" in fields else "",
                        text=strip_wiki_markup(wikitext) if strip_markup else wikitext,
                    )
                root.clear()  # Drop the finished page: memory stays flat whatever the dump size.
    except ET.ParseError as e:
        raise DatasetFormatError(
            f"{os.fspath(path)}: {_DUMP_FORMAT}; XML error after {count} articles: {e} (truncated or corrupt?)"
        ) from e
    except EOFError as e:
        raise DatasetFormatError(
            f"{os.fspath(path)}: {_DUMP_FORMAT}; the bz2 stream is truncated after {count} articles ({e})"
        ) from e
    except OSError as e:
        raise DatasetFormatError(f"{os.fspath(path)}: {_DUMP_FORMAT}; unreadable after {count} articles ({e})") from e


def iter_wikiextractor_jsonl(path: str | os.PathLike) -> Iterator[Article]:
    """Streams the articles of one WikiExtractor `--json` file (e.g. `AA/wiki_00`).

    Raises:
      FileNotFoundError: no such file.
      DatasetFormatError: a line is not a JSON object with a string "text",
        the file is not UTF-8, or its bz2 stream is truncated or corrupt; the
        message names the file and line.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"WikiExtractor file not found: {os.fspath(path)} ({_JSONL_FORMAT})")
    opener = bz2.open if os.fspath(path).endswith(".bz2") else open
    line_number = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text = record["text"]
                    if not isinstance(text, str):
                        raise TypeError(f'"text" is a {type(text).__name__}, not a string')
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise DatasetFormatError(f"{os.fspath(path)}:{line_number}: {_JSONL_FORMAT}; found {line[:60]!r} ({e})") from e
                if text.strip():
                    yield Article(id=str(record.get("id", "")), title=str(record.get("title", "")), text=text)
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{os.fspath(path)}:{line_number + 1}: {_JSONL_FORMAT}; not UTF-8 ({e})") from e
    except (EOFError, OSError) as e:
        raise DatasetFormatError(
            f"{os.fspath(path)}: {_JSONL_FORMAT}; the bz2 stream is truncated or corrupt after line {line_number} ({e})"
        ) from e
