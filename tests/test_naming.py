"""Stored names of images (saa.naming): injective, plain (no folders), short enough for a file
system."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from saa.naming import stored_stem


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="a_/~.-Z", min_size=1, max_size=12), min_size=2, max_size=8, unique=True))
def test_stored_stems_are_injective_and_plain(keys):
    stems = [stored_stem(k) for k in keys]
    assert len(set(stems)) == len(stems), dict(zip(keys, stems))
    assert all("/" not in s and s not in (".", "..") and s for s in stems)


def test_long_key_gets_a_short_unique_name():
    a, b = "d/" + "x" * 300, "d/" + "x" * 299 + "y"
    assert stored_stem(a) != stored_stem(b) and len(stored_stem(a).encode()) <= 180
