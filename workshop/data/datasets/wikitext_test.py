"""Tests for workshop.data.datasets.wikitext: markup stripping and dump streaming."""

import bz2
import json
import os
from xml.sax.saxutils import escape

from absl.testing import absltest
from absl.testing import parameterized

from workshop.data.datasets import wikitext
from workshop.data.idx import DatasetFormatError

# Constructs as they appear in real English Wikipedia articles.
_ARTICLE = """{{Short description|Political philosophy and movement}}
{{Infobox philosophy
| name = Anarchism
| image = [[File:Flag.svg|120px]]
| era = {{nowrap|19th {{small|century}}}}
}}
'''Anarchism''' is a [[political philosophy]] and [[Political movement|movement]] that is \
skeptical of all justifications for [[authority]].<ref>{{cite book |last=McLaughlin |year=2007 |page=59}}</ref> \
It is ''usually'' placed on the [[Left-wing politics|far left]].<ref name="Brooks"/> <!-- hidden note -->

== Etymology, terminology, and definition ==
[[File:Wilhelm Weitling.jpg|thumb|upright|Wilhelm Weitling, a [[Germany|German]] [[tailor]]]]
The word derives from the [[Ancient Greek]] ''anarkhia'' ({{lang|grc|ἀναρχία}}), meaning "without a ruler".&nbsp;See [https://example.org/etym the etymology page] and [https://example.org/bare].

=== Table ===
{| class="wikitable"
|-
! Year !! Event
|-
| 1840 || {{sortname|Pierre-Joseph|Proudhon}}
|}
* First point about [[Mutualism (economic theory)|]]
# Second point
<math>x^2</math>Text after math.
__NOTOC__
[[Category:Anarchism| ]]
[[de:Anarchismus]]"""

_EXPECTED = """Anarchism is a political philosophy and movement that is skeptical of all justifications for authority. \
It is usually placed on the far left.

Etymology, terminology, and definition

The word derives from the Ancient Greek anarkhia, meaning "without a ruler". See the etymology page and.

Table

First point about Mutualism
Second point
Text after math."""


def _page(title, ns, text, page_id, redirect=None):
    redirect_xml = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return f"""  <page>
    <title>{escape(title)}</title>
    <ns>{ns}</ns>
    <id>{page_id}</id>
{redirect_xml}    <revision>
      <id>{page_id}00</id>
      <timestamp>2024-01-01T00:00:00Z</timestamp>
      <contributor><username>Editor</username><id>1</id></contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>
      <sha1>0</sha1>
    </revision>
  </page>
"""


def write_dump(path, pages):
    """Writes a MediaWiki export-0.11 dump of `pages` (title, ns, text[, redirect])."""
    body = "".join(_page(*page[:3], page_id=i + 1, redirect=page[3] if len(page) > 3 else None) for i, page in enumerate(pages))
    xml = f"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="en">
  <siteinfo>
    <sitename>Wikipedia</sitename>
    <namespaces><namespace key="0" case="first-letter" /><namespace key="1" case="first-letter">Talk</namespace></namespaces>
  </siteinfo>
{body}</mediawiki>
"""
    opener = bz2.open if path.endswith(".bz2") else open
    with opener(path, "wt", encoding="utf-8") as f:
        f.write(xml)


DUMP_PAGES = [
    ("Anarchism", 0, _ARTICLE),
    ("AccessibleComputing", 0, "#REDIRECT [[Computer accessibility]]", "Computer accessibility"),
    ("Talk:Anarchism", 1, "Talk page text."),
    ("Albedo", 0, "'''Albedo''' is the fraction of light &amp; heat that a surface reflects.<ref>Coakley</ref>"),
    ("Old redirect", 0, "#redirect [[Albedo]]"),
    ("Template:Infobox", 10, "{{{name}}}"),
]


class StripMarkupTest(absltest.TestCase):

    def test_real_article_constructs(self):
        self.assertEqual(wikitext.strip_wiki_markup(_ARTICLE), _EXPECTED)

    def test_nested_templates_and_unbalanced_braces(self):
        self.assertEqual(wikitext.strip_wiki_markup("a {{x|{{y|{{z}}}}|w}} b"), "a b")
        self.assertEqual(wikitext.strip_wiki_markup("keep }} this"), "keep }} this")
        self.assertEqual(wikitext.strip_wiki_markup("cut {{never closed [[x]]"), "cut")

    def test_links(self):
        strip = wikitext.strip_wiki_markup
        self.assertEqual(strip("[[Paris]]ian [[Paris|the capital]]"), "Parisian the capital")
        self.assertEqual(strip("see [[:Category:Cities]]"), "see Category:Cities")
        self.assertEqual(strip("[[Image:x.png|thumb|a [[b|c]] d]]after"), "after")

    def test_refs_comments_and_tags(self):
        strip = wikitext.strip_wiki_markup
        self.assertEqual(strip('x<ref name="a">note {{cite}}</ref>y<ref name=b />z'), "xyz")
        self.assertEqual(strip("a<!-- multi\nline -->b<br />c<small>d</small>"), "abcd")
        self.assertEqual(strip("1&ndash;2&nbsp;m"), "1\u20132 m")

    def test_prose_without_markup_is_unchanged(self):
        strip = wikitext.strip_wiki_markup
        for prose in (
            "The .NET Framework reads files with the .txt extension; call printf() first.",
            "If x < y > z then a <b c.",
            "Write <not a tag> or <x> or <Name> literally, e.g. vector<int> and Map<K, V>.",
            "Spacing ( , ) and ( ) in prose stays , as do ellipses ... and : colons .",
            "Mathematicians write f : X -> Y and 3 . 5 on purpose!",
        ):
            self.assertEqual(strip(prose), prose)

    def test_only_markup_is_tidied(self):
        strip = wikitext.strip_wiki_markup
        self.assertEqual(strip("anarkhia ({{lang|grc|x}}), meaning"), "anarkhia, meaning")
        self.assertEqual(strip("Smith ({{IPA|x}}; born 1950) is"), "Smith (born 1950) is")
        self.assertEqual(strip("a claim {{citation needed}}. Next"), "a claim. Next")
        self.assertEqual(strip("a claim<ref>x</ref> <ref>y</ref>, then"), "a claim, then")
        self.assertEqual(strip("(born {{date|1950}}) and call f() [[File:x.png]]."), "(born) and call f().")
        # Real tags still go, whatever their case and attributes; their content stays.
        self.assertEqual(strip('<B>bold</B> <span style="x">s</span> <BR/> <sup>2</sup>'), "bold s 2")
        self.assertEqual(strip("x<nowiki><y></nowiki>"), "x<y>")


class DumpTest(parameterized.TestCase):

    @parameterized.parameters(".xml", ".xml.bz2")
    def test_streams_articles_skipping_redirects_and_namespaces(self, suffix):
        path = os.path.join(self.create_tempdir().full_path, "enwiki-20240101-pages-articles1" + suffix)
        write_dump(path, DUMP_PAGES)
        articles = list(wikitext.iter_mediawiki_dump(path))
        self.assertEqual([a.title for a in articles], ["Anarchism", "Albedo"])
        self.assertEqual([a.id for a in articles], ["1", "4"])
        self.assertEqual(articles[0].text, _EXPECTED)
        self.assertEqual(articles[1].text, "Albedo is the fraction of light & heat that a surface reflects.")
        raw = list(wikitext.iter_mediawiki_dump(path, namespaces=("1",), strip_markup=False))
        self.assertEqual([(a.title, a.text) for a in raw], [("Talk:Anarchism", "Talk page text.")])

    @parameterized.parameters(".xml", ".xml.bz2")
    def test_truncated_dump_names_file_and_format(self, suffix):
        path = os.path.join(self.create_tempdir().full_path, "pages-articles" + suffix)
        write_dump(path, DUMP_PAGES)
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: int(len(data) * 0.8)])
        with self.assertRaisesRegex(DatasetFormatError, r"pages-articles.*: expected a MediaWiki XML dump .*truncated"):
            list(wikitext.iter_mediawiki_dump(path))

    def test_not_a_dump(self):
        path = os.path.join(self.create_tempdir().full_path, "x.xml")
        with open(path, "w") as f:
            f.write("<html><body/></html>")
        with self.assertRaisesRegex(DatasetFormatError, r"x.xml: expected a MediaWiki XML dump.*root element is <html>"):
            list(wikitext.iter_mediawiki_dump(path))
        with self.assertRaisesRegex(FileNotFoundError, "MediaWiki dump not found: .*missing.xml"):
            list(wikitext.iter_mediawiki_dump(path.replace("x.xml", "missing.xml")))


class JsonlTest(absltest.TestCase):

    def test_reads_wikiextractor_output_and_names_bad_line(self):
        path = os.path.join(self.create_tempdir().full_path, "wiki_00")
        records = [{"id": "12", "url": "u", "title": "A", "text": "Alpha text."}, {"id": "13", "title": "B", "text": ""}]
        with open(path, "w") as f:
            f.write("\n".join(json.dumps(r) for r in records) + "\n")
        self.assertEqual(list(wikitext.iter_wikiextractor_jsonl(path)), [wikitext.Article("12", "A", "Alpha text.")])
        with open(path, "a") as f:
            f.write('{"id": "14", "title": "C"\n')
        with self.assertRaisesRegex(DatasetFormatError, r"wiki_00:3: expected WikiExtractor JSONL"):
            list(wikitext.iter_wikiextractor_jsonl(path))

    def test_non_utf8_non_string_text_and_truncated_bz2_name_the_file(self):
        folder = self.create_tempdir().full_path
        path = os.path.join(folder, "wiki_01")
        with open(path, "wb") as f:
            f.write(b'{"id": "1", "title": "A", "text": "ok"}\n{"id": "2", "title": "B", "text": "caf\xe9"}\n')
        with self.assertRaisesRegex(DatasetFormatError, r"wiki_01:\d+: expected WikiExtractor JSONL.*; not UTF-8"):
            list(wikitext.iter_wikiextractor_jsonl(path))
        with open(path, "w") as f:
            f.write('{"id": "1", "title": "A", "text": 12}\n')
        with self.assertRaisesRegex(DatasetFormatError, r'wiki_01:1: expected WikiExtractor JSONL.*"text" is a int, not a string'):
            list(wikitext.iter_wikiextractor_jsonl(path))
        packed = bz2.compress("".join(json.dumps({"id": str(i), "title": "T", "text": f"Text {i}."}) + "\n" for i in range(200)).encode())
        path = os.path.join(folder, "wiki_02.bz2")
        with open(path, "wb") as f:
            f.write(packed[: len(packed) // 2])
        with self.assertRaisesRegex(DatasetFormatError, r"wiki_02.bz2: expected WikiExtractor JSONL.*bz2 stream is truncated or corrupt"):
            list(wikitext.iter_wikiextractor_jsonl(path))


if __name__ == "__main__":
    absltest.main()
