"""Generated site and job names, for a target that declares ``named_sites``.

Launchers break on names their authors never tried: a space split by a shell, a quote
that ends a command line, a non-ASCII byte in a path, a name too long for a socket path.
When a target declares ``named_sites`` (:class:`~pytest_flrelia.contract.target.TargetInfo`),
a schedule may rename its sites and name its job with names drawn by `faker` in one of
several locales (spaces, umlauts, kana and kanji, Greek, Cyrillic, Arabic), sometimes
made hostile (quotes, ``$``, ``;``, brackets, ``%``) or long (up to the loader's
:data:`~pytest_flrelia.contract.job.MAX_NAME_BYTES`).

Replay: every name is a pure function of what Hypothesis drew (a seed, a locale and a
kind per name), and faker is seeded with that seed, so ``--flrelia-explore-seed`` gives
the same names.  Shrinking: the first choice of every draw is the plain one (no names
at all, then ``site-N`` per site, locale ``en_US``), so a failure that does not need odd
names shrinks to the default ones.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from faker import Faker
from hypothesis import strategies as st

from pytest_flrelia.contract.job import (
    MAX_NAME_BYTES,
    PATH_SEPARATORS,
    REFUSED_CATEGORIES,
    default_site_names,
    name_problem,
)

Draw = Callable[[st.SearchStrategy[Any]], Any]

LOCALES: tuple[str, ...] = ("en_US", "de_DE", "ja_JP", "fr_FR", "el_GR", "ru_RU", "zh_CN", "ar_AA")
"""The locales names are drawn in; the first is what a shrink moves to."""
KINDS: tuple[str, ...] = ("plain", "person", "company", "city", "hostile", "long")
"""How one name is made; ``plain`` (the default ``site-N``, no job name) shrinks first."""
LONG_BYTES = 200
"""A ``long`` name grows to at least this many bytes of UTF-8 (then is cut to the limit)."""
HOSTILE = ("'", '"', "$HOME", ";", ",", "[x=1]", "%41", "&", "*", "`", "#", "  ")
"""What a ``hostile`` name carries: the characters shells, templates and list syntaxes
give a meaning to (``  ``: two spaces in a row, which a split-and-join loses)."""


@functools.cache
def _faker(locale: str) -> Faker:
    return Faker(locale)


def _clean(text: str) -> str:
    """``text`` without what no name may hold, cut to :data:`MAX_NAME_BYTES`, stripped."""
    kept = "".join(
        c
        for c in text
        if unicodedata.category(c) not in REFUSED_CATEGORIES and c not in PATH_SEPARATORS
    )
    data = kept.strip().encode("utf-8")[:MAX_NAME_BYTES]
    return data.decode("utf-8", "ignore").strip()


def _made(fake: Faker, kind: str, default: str) -> str:
    if kind == "person":
        return str(fake.name())
    if kind == "company":
        return str(fake.company())
    if kind == "city":
        return str(fake.city())
    if kind == "hostile":
        marks = fake.random_elements(HOSTILE, length=3, unique=True)
        return f"{fake.last_name()}{marks[0]}{fake.first_name()}{marks[1]}x{marks[2]}y"
    if kind == "long":
        parts: list[str] = []
        while len(" ".join(parts).encode("utf-8")) < LONG_BYTES:
            parts.append(str(fake.name()))
        return ", ".join(parts)
    return default


def make_names(seed: int, locale: str, kinds: Sequence[str], defaults: Sequence[str]) -> list[str]:
    """One name per kind, made by faker in ``locale`` seeded with ``seed``: pure, so the
    same draw gives the same names in any process.  Every name passes the loader's
    :func:`~pytest_flrelia.contract.job.name_problem`, and they are unique."""
    fake = _faker(locale)
    fake.seed_instance(seed)
    names: list[str] = []
    for kind, default in zip(kinds, defaults, strict=True):
        name = _clean(_made(fake, kind, default)) or default
        base, n = name, 2
        while name in names or name_problem(name) is not None:
            suffix = f" {n}"
            cut = base.encode("utf-8")[: MAX_NAME_BYTES - len(suffix)].decode("utf-8", "ignore")
            name, n = cut.rstrip() + suffix, n + 1
        names.append(name)
    return names


def with_names(draw: Draw, mapping: dict[str, Any], sites: int) -> dict[str, Any]:
    """``mapping`` (a drawn schedule) with its sites renamed and a job name, when drawn:
    the ``site:`` of every fault and the expected error follow the new names."""
    if not draw(st.booleans()):
        return mapping
    seed = draw(st.integers(0, 2**32 - 1))
    locale = draw(st.sampled_from(LOCALES))
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(sites + 1)]
    defaults = [*default_site_names(sites), "job"]
    *site_names, job_name = make_names(seed, locale, kinds, defaults)
    job: dict[str, Any] = dict(mapping["job"])
    if kinds[-1] != "plain":
        job["name"] = job_name
    if any(kind != "plain" for kind in kinds[:-1]):
        job["site_names"] = site_names
    if job == mapping["job"]:
        return mapping
    renamed = dict(zip(default_site_names(sites), site_names, strict=True))
    out = dict(mapping)
    out["job"] = job
    if "faults" in mapping:
        out["faults"] = [_renamed_entry(entry, renamed) for entry in mapping["faults"]]
    out["expect"] = _renamed_expect(mapping["expect"], renamed)
    return out


def _renamed_entry(entry: Mapping[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    out = dict(entry)
    if "site" in out:
        out["site"] = renamed[out["site"]]
    return out


def _renamed_expect(expect: Mapping[str, Any], renamed: Mapping[str, str]) -> dict[str, Any]:
    """The expected error names its site as an escaped regex (``site\\-2``): the same
    site, renamed and escaped.  Longest first, so ``site-1`` never matches in ``site-12``."""
    out = dict(expect)
    error = out.get("error")
    if isinstance(error, str):
        for old in sorted(renamed, key=len, reverse=True):
            escaped = re.escape(old)
            if escaped in error:
                error = error.replace(escaped, re.escape(renamed[old]))
                break
        out["error"] = error
    return out


__all__ = ["KINDS", "LOCALES", "make_names", "with_names"]
