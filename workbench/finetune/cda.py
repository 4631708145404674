"""Counterfactual data augmentation (CDA) for gender: swap gendered words in a text corpus.

The swap is two-sided (every listed word is replaced by its counterpart in one pass, so "he"
and "she" trade places), word-boundary-aware (``his`` in ``history`` is untouched) and
case-preserving (``He`` -> ``She``, ``HE`` -> ``SHE``).

Ambiguous words (no part-of-speech tagging here):
- ``her`` is possessive ("her book" -> "his book") or object ("saw her" -> "saw him"); it
  becomes ``him`` before punctuation or at the end of the text, else ``his``;
- ``his`` is possessive determiner ("his book" -> "her book") or pronoun ("it is his." ->
  "it is hers."); it becomes ``hers`` before punctuation or at the end, else ``her``.
So "I gave her the book" becomes "I gave his the book": a known limitation of lexical CDA.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

GENDER_PAIRS_VERSION = "workbench-gender-pairs-v1"

# (male, female); one-to-one pairs only. "her"/"his"/"hers" are handled by _resolve_ambiguous.
GENDER_PAIRS: tuple[tuple[str, str], ...] = (
    ("he", "she"),
    ("him", "her"),
    ("himself", "herself"),
    ("man", "woman"),
    ("men", "women"),
    ("boy", "girl"),
    ("boys", "girls"),
    ("father", "mother"),
    ("fathers", "mothers"),
    ("son", "daughter"),
    ("sons", "daughters"),
    ("brother", "sister"),
    ("brothers", "sisters"),
    ("king", "queen"),
    ("kings", "queens"),
    ("mr", "mrs"),
    ("husband", "wife"),
    ("husbands", "wives"),
    ("uncle", "aunt"),
    ("uncles", "aunts"),
    ("nephew", "niece"),
    ("nephews", "nieces"),
    ("grandfather", "grandmother"),
    ("grandfathers", "grandmothers"),
    ("grandson", "granddaughter"),
    ("grandsons", "granddaughters"),
    ("dad", "mom"),
    ("dads", "moms"),
    ("daddy", "mommy"),
    ("papa", "mama"),
    ("gentleman", "lady"),
    ("gentlemen", "ladies"),
    ("sir", "madam"),
    ("lord", "lady"),
    ("prince", "princess"),
    ("princes", "princesses"),
    ("boyfriend", "girlfriend"),
    ("boyfriends", "girlfriends"),
    ("groom", "bride"),
    ("grooms", "brides"),
    ("male", "female"),
    ("males", "females"),
    ("masculine", "feminine"),
    ("manhood", "womanhood"),
    ("stepfather", "stepmother"),
    ("stepson", "stepdaughter"),
    ("godfather", "godmother"),
    ("fiance", "fiancee"),
    ("widower", "widow"),
    ("actor", "actress"),
    ("actors", "actresses"),
    ("waiter", "waitress"),
    ("waiters", "waitresses"),
    ("steward", "stewardess"),
    ("hero", "heroine"),
    ("heroes", "heroines"),
    ("emperor", "empress"),
    ("duke", "duchess"),
    ("monk", "nun"),
    ("monks", "nuns"),
    ("patriarch", "matriarch"),
    ("fraternity", "sorority"),
    ("paternal", "maternal"),
    ("paternity", "maternity"),
    ("brotherhood", "sisterhood"),
    ("spokesman", "spokeswoman"),
    ("chairman", "chairwoman"),
    ("businessman", "businesswoman"),
    ("businessmen", "businesswomen"),
    ("congressman", "congresswoman"),
    ("policeman", "policewoman"),
    ("salesman", "saleswoman"),
    ("schoolboy", "schoolgirl"),
    ("gents", "ladies"),
)
AMBIGUOUS = ("her", "his", "hers")


def _swap_table(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """word -> counterpart, lower-case; the first pair listing a word wins ("lady" -> "gentleman")."""
    table: dict[str, str] = {}
    for male, female in pairs:
        table.setdefault(male, female)
        table.setdefault(female, male)
    for word in AMBIGUOUS:
        table.pop(word, None)
    return table


SWAP_TABLE = _swap_table(GENDER_PAIRS)
MALE_WORDS = frozenset(male for male, _ in GENDER_PAIRS) | {"his"}
FEMALE_WORDS = frozenset(female for _, female in GENDER_PAIRS) | {"her", "hers"}
_WORD_PATTERN = re.compile(
    r"\b(" + "|".join(sorted(map(re.escape, [*SWAP_TABLE, *AMBIGUOUS]), key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)
_PRONOUN_FOLLOWS = re.compile(r"\s*([.,;:!?)\"']|$)")


class NoGenderedWordsError(ValueError):
    """CDA found no gendered word in the corpus, so augmentation would change nothing."""


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[0].isupper():
        return word[0].upper() + word[1:]
    return word


def _resolve_ambiguous(word: str, following: str) -> str:
    stands_alone = _PRONOUN_FOLLOWS.match(following) is not None
    if word == "her":
        return "him" if stands_alone else "his"
    if word == "his":
        return "hers" if stands_alone else "her"
    return "his"  # hers


def swap_gender(text: str) -> str:
    """The counterfactual of ``text``: every gendered word swapped, case kept."""

    def replace(match: re.Match[str]) -> str:
        original = match.group(0)
        lower = original.lower()
        counterpart = _resolve_ambiguous(lower, text[match.end() :]) if lower in AMBIGUOUS else SWAP_TABLE[lower]
        return _match_case(original, counterpart)

    return _WORD_PATTERN.sub(replace, text)


def gendered_words(text: str) -> list[str]:
    """The listed gendered words found in ``text`` (lower-case, in order)."""
    return [m.group(0).lower() for m in _WORD_PATTERN.finditer(text)]


@dataclass(frozen=True)
class AugmentedCorpus:
    """Originals plus the counterfactuals of the lines that changed.

    Attributes:
        texts: the original texts followed by one counterfactual per changed text.
        n_original: number of input texts; n_changed: how many had a gendered word.
    """

    texts: tuple[str, ...]
    n_original: int
    n_changed: int


def augment(texts: Sequence[str], on_no_gendered_words: str = "error") -> AugmentedCorpus:
    """Two-sided CDA: keep every text and append the counterfactual of each text that changed.

    Args:
        on_no_gendered_words: ``"error"`` raises NoGenderedWordsError when nothing changed,
            ``"warn"`` returns the corpus unchanged (n_changed = 0) for the caller to report.
    """
    if on_no_gendered_words not in ("error", "warn"):
        raise ValueError(f"on_no_gendered_words is {on_no_gendered_words!r}; use 'error' or 'warn'")
    counterfactuals = [swapped for text in texts if (swapped := swap_gender(text)) != text]
    if not counterfactuals and on_no_gendered_words == "error":
        raise NoGenderedWordsError(
            f"none of the {len(texts)} texts contains a gendered word of {GENDER_PAIRS_VERSION}; "
            "CDA would not change the corpus: pick a corpus that mentions people, or set on_no_gendered_words='warn'"
        )
    return AugmentedCorpus((*texts, *counterfactuals), len(texts), len(counterfactuals))


class CorpusFormatError(ValueError):
    """A corpus file that cannot be read as asked."""


def read_corpus(path: Path, column: str | None = None) -> list[str]:
    """Texts of a corpus file: ``.txt`` (one text per non-empty line), ``.csv`` (``column``)
    or ``.jsonl`` (``column`` names the JSON field; dotted paths such as ``prompt.text`` work)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if column is None:
        raise CorpusFormatError(
            f"{path}: a {suffix} corpus needs column= (the CSV column or JSONL field holding the text)"
        )
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if column not in (reader.fieldnames or []):
                raise CorpusFormatError(f"{path}: no column {column!r}; columns are {reader.fieldnames}")
            return [row[column] for row in reader if row[column]]
    if suffix == ".jsonl":
        texts = []
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                value = json.loads(line)
                for key in column.split("."):
                    if not isinstance(value, dict) or key not in value:
                        raise CorpusFormatError(f"{path}:{line_number}: no field {column!r}")
                    value = value[key]
                texts.append(str(value))
        return texts
    raise CorpusFormatError(f"{path}: unknown corpus format {suffix!r}; use .txt, .csv or .jsonl")
