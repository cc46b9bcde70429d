"""The reference banks of a run: ``saa run --bank BANK`` / ``--references DIR`` / ``--k-shot K``.

For a method that compares images (``lite``, preset ``improved``, a plug-in with reference
features) a run normally scores each test image against the OTHER test images of its category.
With references, every test image is scored against a bank of good parts only
(:class:`saa.bank.ReferenceBank`): no pass 1 over the test set, and a map equals what ``saa
predict --bank`` gives for the same image.

* ``--bank BANK``: a bank made by ``saa bank build`` (one category), or a folder of banks
  ``BANK/<category>/`` (one per category of the run); opened and checked against the run's method,
  settings and model files (one line naming the first difference);
* ``--references DIR``: a bank is built per category from the good images in ``DIR/<category>/``
  (with one category, ``DIR`` itself when it holds the images), into ``OUT/<category>/bank/``;
* ``--k-shot K [--seed-run R] [--seeds PATH]``: the same from the dataset's good training images
  that the seed list names for run ``R`` (:func:`saa.bank.dataset.dataset_references`; ``--seeds``
  is needed unless the dataset ships its lists: kind ``vand_kshot``).

:func:`plan_banks` resolves what each category's bank is made of without writing anything (so the
run's settings fingerprint covers it: a rerun with other references starts afresh); :func:`make_banks`
builds (rank 0, under the run folder's lock) or reuses the banks and opens them (every process:
the banks are read-only, so torchrun shards share them).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..errors import ConfigError, SaaError

__all__ = ["References", "BankPlan", "plan_banks", "make_banks", "references_record", "run_references",
           "describe_references"]

log = logging.getLogger("saa.run")


@dataclass(frozen=True)
class References:
    """What the command line says a run's images are scored against (at most one of ``bank``,
    ``folder`` and ``k_shot``; none: the images against each other)."""

    bank: Optional[str] = None
    folder: Optional[str] = None
    k_shot: Optional[int] = None
    seed_run: int = 0
    seeds: Optional[str] = None
    #: kept feature positions of a bank built here (None: the bank default)
    max_positions: Optional[int] = None

    def __post_init__(self):
        given = [n for n, v in (("--bank", self.bank), ("--references", self.folder), ("--k-shot", self.k_shot))
                 if v is not None]
        if len(given) > 1:
            raise ConfigError(f"{' and '.join(given)}: give one source of references")
        if self.k_shot is None and (self.seeds is not None or self.seed_run != 0):
            raise ConfigError("--seed-run and --seeds choose the k-shot references: add --k-shot K")
        if self.k_shot is not None and int(self.k_shot) < 1:
            raise ConfigError(f"--k-shot must be at least 1, got {self.k_shot}")
        if int(self.seed_run) < 0:
            raise ConfigError(f"--seed-run must be 0 or more, got {self.seed_run}")
        if self.max_positions is not None and int(self.max_positions) < 0:
            raise ConfigError(f"--max-positions must be 0 (keep all) or more, got {self.max_positions}")
        if self.max_positions is not None and self.mode in (None, "bank"):
            raise ConfigError("--max-positions applies to a bank built by the run: use it with --references or "
                              "--k-shot (a --bank was built with its own)")

    @property
    def mode(self) -> Optional[str]:
        if self.bank is not None:
            return "bank"
        if self.folder is not None:
            return "references"
        if self.k_shot is not None:
            return "k_shot"
        return None

    def command_words(self) -> str:
        """The options that give these references again (for the Reproduce line of ``config.yaml``)."""
        import shlex

        words = []
        if self.bank is not None:
            words += ["--bank", self.bank]
        if self.folder is not None:
            words += ["--references", self.folder]
        if self.k_shot is not None:
            words += ["--k-shot", str(self.k_shot), "--seed-run", str(self.seed_run)]
            if self.seeds is not None:
                words += ["--seeds", self.seeds]
        if self.max_positions is not None:
            words += ["--max-positions", str(self.max_positions)]
        return " ".join(shlex.quote(str(w)) for w in words)

    def out_suffix(self) -> str:
        """What the default output folder's name adds (``-5shot-run0``, ``-bank``, ``-references``)."""
        return {None: "", "bank": "-bank", "references": "-references",
                "k_shot": f"-{self.k_shot}shot-run{self.seed_run}"}[self.mode]


@dataclass
class BankPlan:
    """One category's bank: an existing folder to open (``--bank``), or the good images to build it
    from into ``target`` (with their SHA-256, the k-shot record and how they were given)."""

    category: str
    mode: str
    existing: Optional[Path] = None
    target: Optional[Path] = None
    images: list[Path] = field(default_factory=list)
    shas: list[str] = field(default_factory=list)
    kshot: object = None
    source: str = ""
    max_positions: int = 0
    #: what the run's settings fingerprint covers for this category
    identity: str = ""


def _sha_text(data) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _single_bank(path: Path) -> bool:
    from ..bank.records import MANIFEST

    return (path / MANIFEST).is_file()


def bank_categories(refs: References) -> Optional[list[str]]:
    """The category of a single ``--bank`` (what a run without ``--categories`` is restricted to);
    None otherwise."""
    if refs.bank is None:
        return None
    from ..bank import ReferenceBank

    path = Path(os.path.expanduser(refs.bank))
    if _single_bank(path) or not path.is_dir():
        return [ReferenceBank.open(path).category]  # a missing / broken bank: its one-line error here
    return None


def _references_folder(root: Path, category: str, categories: Sequence[str]) -> Path:
    sub = root / category
    if sub.is_dir():
        return sub
    if len(categories) == 1 and root.is_dir():
        return root
    if not root.is_dir():
        raise SaaError(f"--references {root}: no such folder")
    raise SaaError(f"--references {root}: no folder {category}/ of good images for category {category} (layout: "
                   f"{root}/<category>/*.png; with one category, the images may be in {root} itself)")


def plan_banks(refs: References, method, dataset, kind: str, root: str, categories: Sequence[str],
               folder) -> dict[str, BankPlan]:
    """Each category's bank plan (nothing written; banks given with ``--bank`` are opened and
    checked against ``method`` here, so a mismatch stops the run before it starts)."""
    from ..bank import DEFAULT_MAX_POSITIONS, ReferenceBank, file_sha256
    from ..bank.dataset import dataset_references
    from ..bank.inputs import expand_inputs

    if refs.mode is None:
        return {}
    if not method.needs_references:
        raise ConfigError(f"{method.display_name} compares no images (it uses no references): --bank, --references "
                          "and --k-shot are for a method that does (--method lite, --preset improved)")
    plans: dict[str, BankPlan] = {}
    max_positions = DEFAULT_MAX_POSITIONS if refs.max_positions is None else int(refs.max_positions)
    for cat in categories:
        if refs.mode == "bank":
            given = Path(os.path.expanduser(refs.bank))
            path = given if _single_bank(given) else given / cat
            if not _single_bank(given) and not path.is_dir():
                raise SaaError(f"--bank {given}: neither a reference bank nor a folder holding one per category "
                               f"(no {path}); build one with `saa bank build --category {cat} --out {path} ...`")
            bank = ReferenceBank.open(path)
            bank.check(method, cat)  # another category, method, setting or model file: one line
            plans[cat] = BankPlan(cat, "bank", existing=path, identity=bank.bank_id)
            continue
        target = folder.category(cat).bank_dir
        if refs.mode == "references":
            where = _references_folder(Path(os.path.expanduser(refs.folder)), cat, categories)
            images, kshot, source = expand_inputs([where]), None, f"--references {where}"
        else:
            got = dataset_references(dataset, kind, root, cat, refs.k_shot, refs.seed_run, refs.seeds)
            images, kshot, source = list(got.paths), got.kshot, got.source
        shas = [file_sha256(p)[0] for p in images]
        identity = _sha_text({"shas": shas, "max_positions": max_positions,
                              "kshot": kshot.model_dump(mode="json") if kshot is not None else None})
        plans[cat] = BankPlan(cat, refs.mode, target=target, images=images, shas=shas, kshot=kshot, source=source,
                              max_positions=max_positions, identity=identity)
    return plans


def _reusable(plan: BankPlan, method):
    """The bank already at ``plan.target`` when it is exactly what the plan would build; else None."""
    from ..bank import ReferenceBank

    if plan.target is None or not plan.target.exists():
        return None
    try:
        bank = ReferenceBank.open(plan.target)
        bank.check(method, plan.category)
    except SaaError as e:
        log.info("%s: rebuilt (%s)", plan.target, e)
        return None
    m = bank.manifest
    wanted = list(dict.fromkeys(plan.shas))  # an input repeated is left out by the build
    same_kshot = (m.kshot.model_dump() if m.kshot else None) == (plan.kshot.model_dump() if plan.kshot else None)
    if [r.sha256 for r in m.images] != wanted or m.scoring.max_positions != plan.max_positions or not same_kshot:
        return None
    return bank


def make_banks(plans: dict[str, BankPlan], method, *, rank: int = 0, world: int = 1,
               agree: Optional[Callable[[bool], bool]] = None, progress: bool = False) -> dict:
    """The opened bank of each category: rank 0 builds those of ``--references`` / ``--k-shot``
    (or reuses the one a previous run of the same references left in the folder), then every
    process opens them (read-only). ``agree`` (torchrun): called by every process with whether
    rank 0 failed, returns whether any did (it is the barrier between building and opening), so a
    failed build stops every process with one line instead of leaving them waiting."""
    from ..bank import ReferenceBank, build_bank

    error: Optional[BaseException] = None
    if rank == 0:
        try:
            for plan in plans.values():
                if plan.existing is not None or _reusable(plan, method) is not None:
                    continue
                if plan.target.exists():  # the run folder's own bank of other references (or damaged)
                    shutil.rmtree(plan.target)
                log.info("%s: building the reference bank of %d good image(s) (%s)", plan.category, len(plan.images),
                         plan.source)
                plan.target.parent.mkdir(parents=True, exist_ok=True)
                build_bank(method, plan.category, plan.images, plan.target, max_positions=plan.max_positions,
                           kshot=plan.kshot, source=plan.source, progress=progress)
        except BaseException as e:  # noqa: BLE001 - raised below, after the other processes know
            error = e
    if world > 1 and agree is not None and agree(error is not None) and error is None:
        raise SaaError("rank 0 could not build the reference banks (see its message); stopping")
    if error is not None:
        raise error
    banks = {}
    for cat, plan in plans.items():
        bank = ReferenceBank.open(plan.existing if plan.existing is not None else plan.target)
        bank.check(method, cat)
        banks[cat] = bank
    return banks


def references_record(plan: BankPlan, bank):
    """The category's :class:`saa.records.ReferencesRecord` for ``metrics.json``."""
    from ..records import ReferencesRecord

    m = bank.manifest
    k = m.kshot
    return ReferencesRecord(mode=plan.mode, bank_id=m.bank_id, bank=str(bank.folder), images=[r.name for r in m.images],
                            paths=[r.path for r in m.images], k=k.k if k else None, seed_run=k.run if k else None,
                            seed_file=k.seed_file if k else None, ids=list(k.ids) if k else [],
                            calibrated=bank.calibration is not None)


def run_references(refs: References):
    """The run-wide :class:`saa.records.RunReferences` (None without references)."""
    from ..records import RunReferences

    if refs.mode is None:
        return None
    source = refs.bank if refs.mode == "bank" else refs.folder
    return RunReferences(mode=refs.mode, k=refs.k_shot, seed_run=refs.seed_run if refs.mode == "k_shot" else None,
                         seeds=refs.seeds, source=source)


def describe_references(category: str, rec) -> str:
    """One line: ``bottle: 5 good reference image(s) (k = 5, seed run 0: 013 048 ...), bank OUT/bottle/bank
    (id 1a2b3c4d5e6f)``."""
    n = len(rec.images)
    if rec.mode == "k_shot":
        how = f" (k = {rec.k}, seed run {rec.seed_run}: {' '.join(rec.ids)})"
    else:
        shown = ", ".join(rec.images[:5]) + (f", ... ({n - 5} more)" if n > 5 else "")
        how = f" ({shown})"
    return f"{category}: {n} good reference image(s){how}, bank {rec.bank} (id {rec.bank_id[:12]})"
