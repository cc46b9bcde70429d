"""The import paths of earlier versions (saa.deprecated): importing each old module warns with a
DeprecationWarning, and every name it had is the very object of its new module, with a warning that
names the new place; a name the old module never had is an AttributeError naming the new module(s).

This is the one test that uses the old paths (``saa.pipeline``, ``saa.evaluator``, ...): every other
test imports from the new modules."""
from __future__ import annotations

import importlib
import re
import sys
import warnings

import pytest

from saa.deprecated import MOVED


def defined_names(module_name: str) -> list[str]:
    """The public functions and classes a module defines itself (what its old path offered)."""
    mod = importlib.import_module(module_name)
    return sorted(n for n, v in vars(mod).items()
                  if not n.startswith("_") and getattr(v, "__module__", None) == module_name)


def names_of(old: str) -> dict[str, str]:
    """{name: new module} of everything the old module gives."""
    target = MOVED[old]
    if isinstance(target, str):
        return {name: target for name in defined_names(target)}
    return dict(target)


def import_afresh(old: str):
    """``import <old>`` as a program that never imported it in this process would."""
    sys.modules.pop(old, None)
    parent, _, child = old.rpartition(".")
    if hasattr(sys.modules.get(parent), child):
        delattr(sys.modules[parent], child)
    return importlib.import_module(old)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_warns_and_gives_the_objects_of_the_new_one(old):
    with pytest.warns(DeprecationWarning, match=rf"module {re.escape(old)} moved"):
        mod = import_afresh(old)
    names = names_of(old)
    assert names, f"{old}: nothing to check"
    for name, new in names.items():
        with pytest.warns(DeprecationWarning, match=rf"{re.escape(old)}\.{name} moved to {re.escape(new)}\.{name}"):
            value = getattr(mod, name)
        assert value is getattr(importlib.import_module(new), name), f"{old}.{name} is not {new}.{name}"
        with warnings.catch_warnings():  # warned once per name
            warnings.simplefilter("error")
            assert getattr(mod, name) is value


def test_the_from_import_forms_of_old_paths_give_the_new_objects():
    from saa.methods.saa_plus import config_fingerprint as new_fingerprint
    from saa.methods.saa_plus.pipeline import SAAPipeline as NewPipeline
    from saa.run import evaluate_run as new_evaluate_run

    for old in ("saa.pipeline", "saa.evaluator"):
        sys.modules.pop(old, None)
        if hasattr(sys.modules["saa"], old.split(".")[1]):
            delattr(sys.modules["saa"], old.split(".")[1])
    with pytest.warns(DeprecationWarning, match="saa.pipeline"):
        from saa.pipeline import SAAPipeline
    with pytest.warns(DeprecationWarning, match="saa.evaluator"):
        from saa import evaluator as E
    assert SAAPipeline is NewPipeline
    with pytest.warns(DeprecationWarning, match="saa.evaluator.evaluate_run moved to saa.run.evaluate_run"):
        assert E.evaluate_run is new_evaluate_run
    with pytest.warns(DeprecationWarning, match="saa.evaluator.config_fingerprint moved to saa.methods.saa_plus"):
        assert E.config_fingerprint is new_fingerprint


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_name_an_old_module_never_had_is_an_attribute_error_naming_the_new_place(old):
    with pytest.warns(DeprecationWarning):
        mod = import_afresh(old)
    target = MOVED[old]
    where = [target] if isinstance(target, str) else sorted(set(target.values()))
    with warnings.catch_warnings(), pytest.raises(AttributeError, match="no attribute 'no_such_name'") as e:
        warnings.simplefilter("ignore", DeprecationWarning)
        mod.no_such_name
    assert all(w in str(e.value) for w in where), str(e.value)
