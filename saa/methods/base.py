"""What a method is: the :class:`Method` protocol every plug-in implements.

A method turns one image of a category into a :class:`saa.prediction.Prediction`. The runner
(:mod:`saa.run`), ``saa predict``, the demo and the UI only talk to this interface:

* :attr:`Method.needs_references`: whether a map depends on the category's other images. Such a
  method computes per-image features first (:meth:`Method.reference_features`, pass 1, stored and
  resumed by the runner), and :meth:`Method.predict` then gets the bank of them
  (:class:`saa.saliency.bank.CrossImageBank`, built with :meth:`Method.bank_settings`) and the
  image's place in it;
* :meth:`Method.fingerprint`: a hash of every setting that changes its maps, and of the reference
  set when it uses one; a stored result with another fingerprint is recomputed;
* :meth:`Method.describe`: what a user reads (console table, ``metrics.md``, the report, messages);
* :attr:`Method.Settings`: its typed settings (a pydantic model), read from the config's
  ``method_options.<name>`` section, changeable with ``--set method_options.<name>.<key>=...``,
  recorded in a run's ``config.yaml`` and covered by the default :meth:`Method.fingerprint`;
* :meth:`Method.model_files`: the model files it loads (``saa doctor``, the missing-files message);
* :meth:`Method.predict_batch` / :meth:`Method.reference_features_batch`: several images at once
  (``saa run --batch-size B``); by default one at a time, overridden by methods whose models take
  batches.

Register a plug-in with :func:`saa.methods.register_method`; ``saa run --method NAME`` and
``saa predict --method NAME`` find it by name.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any, ClassVar, NamedTuple, Optional, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..config import SaaConfig, validate_section
from ..prediction import Prediction

__all__ = ["Method", "NoSettings", "ModelFile", "hash_of", "reference_set_id"]

ALL_PANELS = ("image", "ground_truth", "anomaly_map", "saliency", "boxes")


def hash_of(data: Any, n: int = 16) -> str:
    """Short SHA-256 of a JSON-able value (sorted keys)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def reference_set_id(keys: Sequence[str]) -> str:
    """Identity of a category's image set (order-free): the hash of its sorted keys. The keys may
    carry more than the name (the runner appends each file's size and mtime)."""
    return hashlib.sha256("\n".join(sorted(map(str, keys))).encode("utf-8")).hexdigest()


class NoSettings(BaseModel):
    """The settings of a method that has none of its own (``method_options.<name>`` must be empty)."""

    model_config = ConfigDict(extra="forbid")


class ModelFile(NamedTuple):
    """A model file a method loads: what it is, and its path as the config names it (relative
    paths are looked up in the weights folders, :meth:`SaaConfig.resolve_path`; ``package:NAME``
    is a file shipped in a Python package and always present)."""

    what: str
    path: str


class Method(ABC):
    """Base class of the methods. Subclasses set :attr:`name` and implement :meth:`predict`
    (abstract: a class without it cannot be instantiated); a method with settings declares them
    as a pydantic model in :attr:`Settings` (the default :meth:`fingerprint` covers every one of
    them); a method whose :attr:`needs_references` is true also implements
    :meth:`reference_features` (and may change :meth:`bank_settings`, whose default is the k = 1
    nearest search over all other images)."""

    #: registry name (``saa run --method NAME``)
    name: ClassVar[str] = ""
    #: panels of ``saa predict --panels`` this method can draw
    panels: ClassVar[tuple[str, ...]] = ALL_PANELS
    #: the typed settings: the config's ``method_options.<name>`` section (unknown keys refused)
    Settings: ClassVar[type[BaseModel]] = NoSettings

    def __init__(self, config: SaaConfig, **settings: Any):
        """``settings``: values that replace those of the config's ``method_options.<name>``."""
        self.config = config
        self.settings = self.settings_from(config, **settings)

    @classmethod
    def settings_from(cls, config: SaaConfig, **overrides: Any) -> BaseModel:
        """The method's settings in ``config`` (``method_options.<name>``, then ``overrides``),
        validated; a :class:`~saa.errors.ConfigError` naming each bad key otherwise."""
        raw = config.method_options.get(cls.name) or {}
        if not isinstance(raw, dict):
            raw = {"(section)": raw}  # reported as a bad key below
        return validate_section(cls.Settings, {**raw, **overrides}, ("method_options", cls.name), config)

    def resolved_config(self) -> SaaConfig:
        """``config`` with this method's complete settings (defaults filled in) under
        ``method_options.<name>``: what a run records in its ``config.yaml``."""
        values = self.settings.model_dump(mode="json")
        if not values:
            return self.config
        options = {**self.config.method_options, self.name: values}
        return self.config.model_copy(update={"method_options": options})

    # -- what it is ---------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """Short human name, e.g. ``SAA+ (preset official)``."""
        return self.name

    @property
    def needs_references(self) -> bool:
        return False

    @property
    def display_name(self) -> str:
        """How messages name the method (e.g. ``the full method (SAA+) needs 3 model files``)."""
        return f"method {self.name}"

    def describe(self) -> dict[str, Any]:
        """``name``, ``label``, ``preset`` (or None), ``settings`` (what the report lists) and
        ``summary`` (one sentence)."""
        return {"name": self.name, "label": self.label, "preset": None, "settings": {}, "summary": self.label}

    def load(self) -> "Method":
        """Load the models now (otherwise they load when first needed); returns self."""
        return self

    def model_files(self) -> list[ModelFile]:
        """The model files this method loads under its config (none by default)."""
        return []

    def required_files(self) -> list[str]:
        """Model files the method needs that do not exist (resolved paths; empty: it can run)."""
        from ..settings import model_path_exists

        paths = [self.config.resolve_path(f.path) for f in self.model_files()
                 if not str(f.path).startswith("package:")]
        return [str(p) for p in paths if not model_path_exists(p)]

    # -- what it computes ---------------------------------------------------------------------
    def fingerprint(self, category: str, references: Optional[Sequence[str]] = None) -> str:
        """Hash of every setting that changes this method's maps (its name, ``out_size`` and every
        one of its :attr:`Settings`), and of ``references`` (the category's image set, see
        :func:`saa.run.engine.reference_ids`) when the method uses them."""
        data: dict[str, Any] = {"method": self.name, "out_size": int(self.config.out_size),
                                "settings": self.settings.model_dump(mode="json")}
        if references is not None:
            data["references"] = reference_set_id(references)
        return f"{self.name}-" + hash_of(data, 11)

    def reference_features(self, rgb: np.ndarray):
        """Pass 1: the unit feature grid (C, h, w) of one image that the other images are compared
        with. Only called when :attr:`needs_references` is true; a method saying so must define it."""
        raise TypeError(f"method {self.name!r} needs reference images but defines no reference_features()")

    def bank_settings(self) -> dict[str, Any]:
        """Keyword arguments of :class:`~saa.saliency.bank.CrossImageBank` for this method
        (default: the bank's own, the single nearest position over all other images)."""
        return {}

    @abstractmethod
    def predict(self, rgb: np.ndarray, category: str, *, bank=None, index: Optional[int] = None) -> Prediction:
        """One image -> :class:`Prediction`. ``bank`` / ``index``: the category's reference bank
        and this image's place in it (None: the image is not in the bank)."""

    # -- several images at once (the runner's ``--batch-size``) --------------------------------
    def predict_batch(self, images: Sequence[np.ndarray], category: str, *, bank=None,
                      indices: Optional[Sequence[Optional[int]]] = None) -> list[Prediction]:
        """:meth:`predict` of several images of one category (``indices``: each one's ``index``).
        The default predicts one image at a time; a method whose models can take a batch
        overrides it, with predictions equal to those of :meth:`predict`."""
        indices = [None] * len(images) if indices is None else list(indices)
        return [self.predict(im, category, bank=bank, index=i) for im, i in zip(images, indices)]

    def reference_features_batch(self, images: Sequence[np.ndarray]) -> list:
        """:meth:`reference_features` of several images (default: one at a time; a method may
        run its models once on the batch, with the same features)."""
        return [self.reference_features(im) for im in images]

    # -- reference banks (the same for every method) ------------------------------------------
    def bank_from_features(self, features: Sequence, keys: Optional[Sequence[str]] = None):
        from ..saliency.bank import CrossImageBank

        settings = dict(self.bank_settings())
        if keys is not None:
            settings["keys"] = list(keys)
        return CrossImageBank.from_features(list(features), **settings)

    def bank_from_store(self, store, keys: Sequence[str]):
        from ..saliency.bank import CrossImageBank

        return CrossImageBank.from_store(store, list(keys), **self.bank_settings())
