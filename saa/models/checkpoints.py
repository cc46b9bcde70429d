"""Safe, explicit checkpoint loading shared by the model wrappers, and bounded reads of the small
files of a model folder (``config.json``, tokenizer files, the checksum sidecar): size limits,
regular files only, sizes a config declares checked against its weights before anything is built."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import INSTALL_HINT, CheckpointError


#: Files of a model folder that loaders read whole into memory (JSON, token lists), with the
#: most bytes saa accepts for each. The published files are far smaller (bert-base-uncased:
#: config.json 570 B, vocab.txt 232 KB, tokenizer.json 466 KB); a file over its limit is not what
#: its name says, and reading / parsing it could take any amount of time and memory.
SMALL_FILE_LIMITS = {
    "config.json": 1 << 20,
    "generation_config.json": 1 << 20,
    "preprocessor_config.json": 1 << 20,
    "tokenizer_config.json": 1 << 20,
    "special_tokens_map.json": 1 << 20,
    "added_tokens.json": 16 << 20,
    "vocab.txt": 16 << 20,
    "vocab.json": 64 << 20,
    "merges.txt": 64 << 20,
    "tokenizer.json": 64 << 20,
    "model.safetensors.index.json": 16 << 20,
    "pytorch_model.bin.index.json": 16 << 20,
}


def _size_text(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n} bytes"


def check_small_file(p: Path, what: str, limit: int | None = None) -> None:
    """Refuse ``p`` when it is larger than ``limit`` (default: :data:`SMALL_FILE_LIMITS` by name)."""
    limit = SMALL_FILE_LIMITS.get(p.name) if limit is None else limit
    if limit is None:
        return
    size = p.stat().st_size
    if size > limit:
        raise CheckpointError(
            f"{what} {p} is {_size_text(size)}, more than the {_size_text(limit)} saa reads for a file "
            f"of this kind: it is not a {p.name} of a published model; {INSTALL_HINT}")


def _not_regular(p: Path, what: str) -> CheckpointError:
    if p.is_dir():
        return CheckpointError(f"{what} should be a file but is a folder: {p}")
    return CheckpointError(f"{what} {p} is not a regular file (a device, pipe or socket, or a link to one): "
                           f"reading it might never end; point the config at the file itself")


def check_small_files(folder: str | Path, what: str) -> None:
    """:func:`check_small_file` on every file of :data:`SMALL_FILE_LIMITS` present in ``folder``
    (which libraries read whole when they load the folder); each must be a regular file."""
    for name in SMALL_FILE_LIMITS:
        p = Path(folder) / name
        if p.is_file():
            check_small_file(p, what)
        elif p.exists():
            raise _not_regular(p, what)


def require_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointError(f"{what} not found: {p}\n  {INSTALL_HINT} (or point the config at your file)")
    if p.is_dir():
        raise CheckpointError(f"{what} should be a file but is a folder: {p}")
    if not p.is_file():
        raise _not_regular(p, what)
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} is empty (0 bytes): {p}\n  delete it and {INSTALL_HINT}")
    check_small_file(p, what)
    return p


def read_small_bytes(path: str | Path, what: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, never reading more than that (the
    size on disk is checked first, and the read stops there whatever the file does meanwhile)."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise _not_regular(p, what)
    try:
        check_small_file(p, what, limit)
        with open(p, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise CheckpointError(f"{what} {p} cannot be read: {e.strerror or e}") from None
    if len(data) > limit:
        raise CheckpointError(f"{what} {p} is larger than the {_size_text(limit)} saa reads for a file of this kind")
    return data


def read_json_file(path: str | Path, what: str) -> dict[str, Any]:
    """A JSON object from a small file (:data:`SMALL_FILE_LIMITS` by name, else 1 MiB), with
    one-line errors for what is not UTF-8 JSON, nested too deeply or not an object."""
    p = require_file(path, what)
    data = read_small_bytes(p, what, SMALL_FILE_LIMITS.get(p.name, 1 << 20))
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{what} {p} is not UTF-8 text") from None
    except RecursionError:
        raise CheckpointError(f"{what} {p} is not a model's JSON file: it is nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, integers with too many digits
        raise CheckpointError(f"{what} {p} is not valid JSON ({_plain(str(e).splitlines()[0], 200)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {p} holds a JSON {type(obj).__name__}, not an object")
    return obj


def require_dir(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointError(f"{what} folder not found: {p}\n  {INSTALL_HINT} (or point the config at your folder)")
    return p


# Official file names whose sha256 is known (SAM names carry the first 6 hex digits of it).
KNOWN_SHA256_PREFIX = {
    "sam_vit_h_4b8939.pth": "4b8939",
    "sam_vit_l_0b3195.pth": "0b3195",
    "sam_vit_b_01ec64.pth": "01ec64",
}


SIDECAR_BYTES = 256
_HEX64 = re.compile(r"[0-9a-f]{64}")


def verify_known_checksum(p: Path) -> None:
    """For a file with an official name, check its sha256 (once: the result is remembered in a
    ``<file>.sha256`` sidecar keyed by size and modification time)."""
    prefix = KNOWN_SHA256_PREFIX.get(p.name)
    if prefix is None:
        return
    st = p.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    side = p.with_name(p.name + ".sha256")
    # the sidecar is only read or written when it is a regular file (or absent): a pipe or a device
    # in its place would block or never end; its 2 short lines are read and no more
    regular = side.is_file()
    digest = None
    if regular:
        try:
            with open(side, "rb") as f:
                cached = f.read(SIDECAR_BYTES).decode("ascii").split("\n")
            if len(cached) >= 2 and cached[1] == stamp and _HEX64.fullmatch(cached[0]):
                digest = cached[0]
        except (OSError, UnicodeDecodeError):  # unreadable or not a sidecar saa wrote: recompute
            pass
    if digest is None:
        digest = sha256_file(p)
        if regular or not (side.exists() or side.is_symlink()):
            try:
                side.write_text(f"{digest}\n{stamp}\n")
            except OSError:
                pass
    if not digest.startswith(prefix):
        raise CheckpointError(
            f"{p}: sha256 {digest[:12]}... does not match the official file (expected {prefix}...): the "
            f"download is corrupt or the file was replaced. Delete it and {INSTALL_HINT}.")


def safe_globals() -> list:
    """The explicit allow-list of non-tensor types that official checkpoints carry besides their
    tensors and that :func:`load_state_dict` accepts under ``weights_only=True``: an
    ``argparse.Namespace`` of training arguments (a plain attribute bag; its values are still
    unpickled by the restricted loader) and numpy scalars / dtypes (e.g. a best metric saved as
    ``np.float64``). Plain ints, floats, strings, lists, dicts (an epoch number, an optimizer or
    scheduler state) need no allow-listing. Nothing that runs code when constructed is listed."""
    import argparse

    allowed: list = [argparse.Namespace]
    try:
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        allowed.append(core.multiarray.scalar)
        allowed.append(np.dtype)
        dtypes = getattr(np, "dtypes", None)
        if dtypes is not None:
            allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    except (ImportError, AttributeError):  # pragma: no cover - numpy is a dependency
        pass
    return allowed


def load_state_dict(path: str | Path, what: str) -> dict[str, Any]:
    """``torch.load(..., weights_only=True)`` with :func:`safe_globals` allowed and clear errors;
    never executes pickled code. A file refused by the safe loader is reported with the entry that
    holds the refused object (e.g. ``entry 'args' holds a mypackage.Config``)."""
    p = require_file(path, what)
    verify_known_checksum(p)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{what} {p}: {_refusal(p, e)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(
            f"{what} {p} cannot be read: the file is truncated or corrupt "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            f"Delete it and {INSTALL_HINT}."
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {p} does not hold a state dict (found {type(obj).__name__})")
    return obj


#: Bounds of the search for the entry that holds a refused object (only used to word the message):
#: objects visited in all (each entry's search visits an object once) and nesting depth.
SEARCH_NODES = 200_000
SEARCH_DEPTH = 1_000
SEARCH_NAMES = 1_000  # refused types (each becomes a placeholder class)
#: Bounds of what the message quotes from the file: names, entries, characters of each.
MESSAGE_ITEMS = 5
MESSAGE_CHARS = 80
#: The pickle inside a checkpoint (``data.pkl``) holds the structure, not the tensors: a few MB
#: at most for published files (SAM ViT-H: 86 KB). A larger one is not searched.
PICKLE_BYTES = 64 << 20


def _plain(text: str, n: int = MESSAGE_CHARS) -> str:
    """``text`` as one short line: control characters escaped, cut to ``n`` characters."""
    t = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return t if len(t) <= n else t[: n - 3] + "..."


def _listed(items, n: int = MESSAGE_ITEMS) -> str:
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def _refusal(p: Path, err: Exception) -> str:
    """One line: which entry of the file holds which refused type. Bounded work whatever the file
    holds (see :class:`_HolderSearch`)."""
    names: list[str] = []
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
    except Exception:  # noqa: BLE001 - only used to word the message
        pass
    allowed = {f"{t.__module__}.{t.__qualname__}" for t in safe_globals()}
    names = sorted(n for n in names if n not in allowed)
    entries, note = _entries_holding(p, set(names)) if names else ({}, "")
    if entries:
        parts = [f"entry '{k}' holds {_listed(_plain(n) for n in sorted(v))}" for k, v in entries.items()]
        where = "; ".join(parts[:MESSAGE_ITEMS]) + (f"; and {len(parts) - MESSAGE_ITEMS} more entries"
                                                     if len(parts) > MESSAGE_ITEMS else "")
    elif names:
        where = f"it holds {_listed(_plain(n) for n in names)}{note}"
    else:
        where = _plain(str(err).splitlines()[0], 200) if str(err) else "it holds objects other than tensors"
    return (f"refused by the safe loader (weights_only=True): {where}, which is not on saa's allow-list "
            f"(tensors, numbers, strings, lists, dicts, argparse.Namespace, numpy scalars) because "
            f"unpickling it could run code; re-save the file with only its tensors "
            f"(torch.save({{'model': state_dict}}, ...))")


class _Inert(dict):
    """What every global of the scanned pickle becomes: a class (so REDUCE, NEWOBJ and BUILD all
    work) whose instances keep their arguments and state, and run nothing."""

    global_name = None

    def __init__(self, *a, **k):
        self.args = (a, k) if (a or k) else None

    def __setstate__(self, state):
        self.state = state


class _HolderSearch:
    """Which refused globals each object of an unpickled structure reaches. Every search visits
    an object once (memoised by ``id``: a file whose objects are shared many times has
    astronomically many paths but few objects) and all searches together visit at most
    ``nodes`` objects, none deeper than ``depth``; past a bound :attr:`exhausted` is set and the
    results are incomplete (the caller then names the types without their entries)."""

    def __init__(self, nodes: int | None = None, depth: int | None = None):
        self.budget = SEARCH_NODES if nodes is None else nodes
        self.depth = SEARCH_DEPTH if depth is None else depth
        self.visited = 0
        self.exhausted = False

    @staticmethod
    def children(obj) -> list:
        out: list = []
        if isinstance(obj, dict):
            for k, v in obj.items():
                out.append(k)
                out.append(v)
        elif isinstance(obj, (list, tuple, set, frozenset)):
            out.extend(obj)
        if isinstance(obj, _Inert):
            out.extend(x for x in (getattr(obj, "args", None), getattr(obj, "state", None)) if x is not None)
        return out

    def found(self, root) -> set[str]:
        """The refused globals ``root`` reaches (iterative: no recursion limit to hit)."""
        out: set[str] = set()
        seen: set[int] = set()
        stack = [(root, 0)]
        while stack:
            obj, d = stack.pop()
            if id(obj) in seen:
                continue
            if self.visited >= self.budget or d > self.depth:
                self.exhausted = True
                return out
            seen.add(id(obj))
            self.visited += 1
            if isinstance(obj, _Inert) and obj.global_name:
                out.add(obj.global_name)
            stack.extend((c, d + 1) for c in self.children(obj))
        return out


def _entries_holding(p: Path, names: set[str], search: _HolderSearch | None = None) -> tuple[dict[str, set[str]], str]:
    """Top-level keys (dotted one level further for nested dicts) of a zip-format checkpoint whose
    value contains an object of one of the global ``names``, found by unpickling ``data.pkl`` with
    every global replaced by an inert placeholder (nothing of the file is executed); and a note
    for the message when the search stopped at its bounds (then the keys are left out)."""
    search = search or _HolderSearch()
    if len(names) > SEARCH_NAMES:
        return {}, f" (with {len(names)} refused types the file was not searched for the entries holding them)"
    markers: dict = {None: type("Marked", (_Inert,), {"global_name": None})}

    def marker(full: str | None):
        if full not in markers:
            markers[full] = type("Marked", (_Inert,), {"global_name": full})
        return markers[full]

    class Scan(pickle.Unpickler):
        def find_class(self, module, name):
            full = f"{module}.{name}"
            return marker(full if full in names else None)

        def persistent_load(self, pid):
            return None

    try:
        with zipfile.ZipFile(p) as z:
            info = next(i for i in z.infolist() if i.filename.endswith("data.pkl"))
            if info.file_size > PICKLE_BYTES:
                return {}, f" (its data.pkl is {_size_text(info.file_size)}: not searched for the entry)"
            with z.open(info) as f:
                data = f.read(PICKLE_BYTES + 1)
            if len(data) > PICKLE_BYTES:
                return {}, " (its data.pkl is larger than its zip header says: not searched for the entry)"
            root = Scan(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001 - legacy format or unreadable: the caller words it without entries
        return {}, ""

    def key_text(k) -> str:
        return _plain(k) if isinstance(k, (str, int)) else f"<{type(k).__name__} key>"

    result: dict[str, set[str]] = {}
    if isinstance(root, dict) and (not isinstance(root, _Inert) or not root.global_name):
        for k, v in list(root.items()):
            hit = search.found(v)
            if hit:
                sub = []
                if isinstance(v, dict) and not (isinstance(v, _Inert) and v.global_name):
                    sub = [f"{key_text(k)}.{key_text(kk)}" for kk, vv in list(v.items()) if search.found(vv)]
                for key in (sub or [key_text(k)]):
                    result[key] = hit
            if search.exhausted:
                break
    if search.exhausted:
        return {}, (f" (the search for the entry holding it stopped after {search.visited} objects: "
                    f"the file's structure is too large or too deeply nested)")
    return result, ""


def check_tokenizer(folder: str | Path, tokenizer) -> None:
    """A text-encoder folder whose tokenizer files disagree with its ``vocab.txt`` (e.g. written by
    transformers 5's ``BertTokenizerFast(vocab_file=...)``, which ignores the file) would turn every
    word into [UNK]: refuse it with the folder's name."""
    vocab = Path(folder) / "vocab.txt"
    if not vocab.exists():
        return
    data = read_small_bytes(vocab, "text encoder file", SMALL_FILE_LIMITS["vocab.txt"])
    try:
        # lines as the tokenizer reads them (text mode: \n, \r and \r\n end a line)
        n = sum(1 for _ in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"text encoder file {vocab} is not UTF-8 text; {INSTALL_HINT}") from None
    if len(tokenizer) < n:
        raise CheckpointError(
            f"tokenizer of {folder} has {len(tokenizer)} tokens but its vocab.txt has {n}: the tokenizer files "
            f"(tokenizer.json) were not built from vocab.txt; rebuild them (saa.testing.write_bert_tokenizer) "
            f"or {INSTALL_HINT}")


#: The numbers of a BERT ``config.json`` that size the text encoder, with the range saa accepts
#: (bert-base-uncased: 30522, 768, 12, 12, 3072, 512, 2). Together with :func:`check_model_size`
#: they bound what a crafted config.json can make transformers build.
BERT_INTS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 1_000_000), "hidden_size": (1, 16384), "num_hidden_layers": (1, 256),
    "num_attention_heads": (1, 1024), "intermediate_size": (1, 262_144),
    "max_position_embeddings": (1, 1_000_000), "type_vocab_size": (0, 1_000_000),
}
#: Elements a config may describe beyond its weight files' bytes (small models, rounding).
SIZE_SLACK = 1 << 20


def check_ints(values: dict, bounds: dict[str, tuple[int, int]], where: str) -> None:
    """Every key of ``bounds`` present in ``values`` is an integer in its range (one-line error)."""
    for key, (lo, hi) in bounds.items():
        if key in values:
            v = values[key]
            if type(v) is not int or not lo <= v <= hi:
                raise CheckpointError(f"{where}: {key} = {_plain(repr(v), 40)} is not an integer from {lo} to {hi}")


def bert_parameters(cfg: dict) -> int:
    """A lower bound of the parameters of the BERT a ``config.json`` describes (embeddings, the
    attention and feed-forward weights of every layer; defaults: bert-base-uncased)."""
    g = cfg.get
    h = g("hidden_size", 768)
    emb = h * (g("vocab_size", 30522) + g("max_position_embeddings", 512) + g("type_vocab_size", 2))
    return emb + g("num_hidden_layers", 12) * (4 * h * h + 2 * h * g("intermediate_size", 3072))


def weight_bytes(folder: Path) -> int:
    """Bytes of the weight files of a transformers folder (``model*.safetensors``,
    ``pytorch_model*.bin``); 0 when there is none."""
    files = [f for pat in ("model*.safetensors", "pytorch_model*.bin") for f in Path(folder).glob(pat)]
    return sum(f.stat().st_size for f in files if f.is_file())


def check_model_size(parameters: int, folder: Path, config: Path) -> None:
    """Refuse a config that describes more parameters than its folder's weight files could hold at
    one byte each: transformers would build (allocate, initialise) what the config says before
    finding that the weights do not fit it."""
    have = weight_bytes(folder)
    if have == 0:
        raise CheckpointError(f"{folder} has no weight file (model.safetensors or pytorch_model.bin); {INSTALL_HINT}")
    if parameters > have + SIZE_SLACK:
        raise CheckpointError(f"{config} describes a model of at least {parameters:,} parameters but the weight files "
                              f"of {folder} hold {have:,} bytes: they do not belong together; {INSTALL_HINT}")


def check_bert_config(cfg: dict, folder: Path, config: Path) -> None:
    """:data:`BERT_INTS` and :func:`check_model_size` for a BERT config (a dict read from ``config``)."""
    check_ints(cfg, BERT_INTS, str(config))
    check_model_size(bert_parameters(cfg), folder, config)


def check_text_encoder(folder: str | Path, what: str = "Grounding DINO text encoder (BERT)") -> Path:
    """A local BERT folder that can be built with bounded work: its small files within
    :data:`SMALL_FILE_LIMITS`, its ``config.json`` a JSON object whose sizes are in range and fit
    its weight files. Returns the folder."""
    folder = require_dir(folder, what)
    check_small_files(folder, f"{what} file")
    config = folder / "config.json"
    check_bert_config(read_json_file(config, f"{what} file config.json"), folder, config)
    return folder


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"models.device is '{device}' but CUDA is not available here; use 'cpu' or 'auto'")
    return d
