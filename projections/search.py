"""What a keyword search matches, defined once for every catalog.

A text is cut into tokens: runs of letters, digits and ``.`` ``_`` ``-`` (so ``resnet-50``, ``v1.2`` and
``my_model`` stay one token), case-folded, with accents removed (``Café`` is ``cafe``). A search's words are
tokenised the same way, and a model or version matches when every word is the beginning of one of its tokens.

The indexes do not tokenise: the present catalog stores these tokens (SQLite's FTS5 gets them hex-encoded, so
that its own Unicode tables and diacritic map cannot re-split or re-fold them; PostgreSQL gets them as the
lexemes of a ``tsvector`` as they are), and the past catalog compares them in Python. So SQLite, PostgreSQL
and the catalog as of any position answer a search the same way, character for character.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from functools import lru_cache

from eventstore.errors import ValidationError

_TOKEN = re.compile(r"[\w.-]+")
# PostgreSQL refuses a lexeme over 2,047 bytes; 255 characters (at most 1,020 bytes) keep every token
# indexable. A longer word is cut the same way, so it still matches what it matched before the cut.
TOKEN_MAX = 255


def fold(text: str) -> str:
    if text.isascii():
        return text.lower()  # what the general rule gives for ASCII, without the Unicode work
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


@lru_cache(maxsize=65_536)  # names, tag keys and values repeat across a page's models and versions
def _split(text: str) -> tuple[str, ...]:
    return tuple(t[:TOKEN_MAX] for t in _TOKEN.findall(fold(text)))


def split(text: str) -> list[str]:
    return list(_split(text))


def tokens(*texts: str) -> list[str]:
    """The distinct tokens of ``texts``, sorted (what an index stores for one model or version)."""
    out: set[str] = set()
    for text in texts:
        out.update(_split(text))
    return sorted(out)


def entity_tokens(name: str, description: str, tags: Mapping[str, str]) -> list[str]:
    """The tokens a model or a version is found by: its name, description, tag keys and values."""
    out = {*_split(name), *_split(description)}
    for key, value in tags.items():
        out.update(_split(key), _split(value))
    return sorted(out)


NAME_MARK = "~"  # not a token character: a name token in a version's index never equals an own token


def version_index_tokens(name: str, description: str, tags: Mapping[str, str]) -> list[str]:
    """What a version's search index stores: its own tokens (description, tag keys and values), and its
    model's name tokens marked with ``NAME_MARK``. A version is found by the same words as before (each word
    begins an own token or a name token, ``entity_tokens``), but a word of the name alone no longer matches
    every version of the model in the index — those are found through the model, whose own words hold its
    name: a search for a model's name at 1,000,000 events fetched all 10,678 versions of the models it named."""
    # One set, one sort (``tokens`` sorted the version's own tokens, then the union was sorted again), the
    # marked name tokens cached: ``Fold.changes`` asks this for every version a page creates or tags.
    out = {*_marked_name(name), *_split(description)}
    for key, value in tags.items():
        out.update(_split(key), _split(value))
    return sorted(out)


@lru_cache(maxsize=4_096)  # a model's versions share its name
def _marked_name(name: str) -> tuple[str, ...]:
    return tuple(NAME_MARK + t for t in _split(name))


def query_words(text: str) -> list[str]:
    """A search's words. Blank text is a ``ValidationError`` (as is a NUL, which no index can hold); text
    with no token in it (``*``, ``"``) gives no words, which match nothing."""
    if "\x00" in text:
        raise ValidationError("the search words contain a NUL character")
    if not text.replace('"', " ").split():
        raise ValidationError("--search needs at least one word")
    return sorted(set(split(text.replace('"', " "))))


def matches(words: Iterable[str], found: Iterable[str]) -> bool:
    """Every word is the beginning of some token (no words: nothing matches)."""
    have = list(found)
    wanted = list(words)
    return bool(wanted) and all(any(t.startswith(w) for t in have) for w in wanted)


def hex_token(token: str) -> str:
    """A token as FTS5 stores it: the hex of its UTF-8 bytes. Hex keeps prefixes (a word is a prefix of a
    token exactly when its hex is a prefix of the token's hex) and is one plain ASCII token to FTS5."""
    return token.encode("utf-8").hex()
