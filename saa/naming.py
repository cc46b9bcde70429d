"""File names for stored results: injective, safe, and never outside their folder.

A sample key is the image's path relative to its category's test folder without the suffix
(``good/000``, ``MT_Blowhole/exp1_num_108719``). :func:`stored_stem` turns it into ONE file name
(no folders) so that no two keys ever share a file:

* the readable form is the key with ``/`` written as ``__`` (``good/000`` -> ``good__000``), used
  when it can be read back unambiguously: the key has no ``__``, no ``_`` next to a ``/`` or at an
  end where a ``/`` could be, no ``~``, no character a file name cannot hold, and the name is short;
* any other key (``good/crack__x`` and ``good__crack/x`` would both read ``good__crack__x``; a
  244-character name) gets a readable prefix, ``~`` and 16 hex digits of the key's SHA-256.
  Readable names never contain ``~``, so the two forms cannot meet, and two hashed names meet only
  if their keys' hashes do.

:func:`plain_name` is the check for names that become one folder (a category): no separators,
not ``.`` / ``..``, not absolute, no control characters.
"""
from __future__ import annotations

import hashlib
import re

from .errors import SaaError

__all__ = ["stored_stem", "plain_name", "MAX_STEM_BYTES"]

#: Longest stored stem in bytes (file systems allow 255; room is left for suffixes such as
#: ``.npz``, ``_panels.png`` and the ``.tmp`` of an atomic write).
MAX_STEM_BYTES = 180
_UNSAFE = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|~]')


def _readable(key: str) -> str:
    return key.replace("/", "__")


def _is_unambiguous(key: str) -> bool:
    if not key or _UNSAFE.search(key) or "__" in key or "_/" in key or "/_" in key:
        return False
    if key.startswith("_") or key.endswith("_") or key.startswith("/") or key.endswith("/") or "//" in key:
        return False
    return key not in (".", "..") and len(_readable(key).encode("utf-8")) <= MAX_STEM_BYTES


def stored_stem(key: str) -> str:
    """The file stem a sample key is stored under (injective; see the module docstring)."""
    key = str(key)
    if _is_unambiguous(key):
        return _readable(key)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = _UNSAFE.sub("-", _readable(key)).strip(".") or "x"
    raw = prefix.encode("utf-8")[: MAX_STEM_BYTES - 17]
    prefix = raw.decode("utf-8", "ignore")
    return f"{prefix}~{digest}"


def plain_name(name: str, what: str = "category") -> str:
    """``name`` if it can be one folder inside the output folder, else a :class:`SaaError`."""
    s = str(name)
    bad = (not s.strip() or s in (".", "..") or "/" in s or "\\" in s or s.startswith("~")
           or bool(re.search(r"[\x00-\x1f\x7f]", s)) or len(s.encode("utf-8")) > MAX_STEM_BYTES
           or re.match(r"^[A-Za-z]:", s) is not None)
    if bad:
        raise SaaError(f"{what} name {s!r} is not a plain folder name (no '/', '\\\\', '..', drive or "
                       f"absolute path, control character; at most {MAX_STEM_BYTES} bytes)")
    return s
