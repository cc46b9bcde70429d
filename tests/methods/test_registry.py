"""The method registry (saa.methods.registry): methods found by name (old names too), unknown names
answered with the closest one, a name registered twice refused."""
from __future__ import annotations

import pytest

from saa.errors import SaaError
from saa.methods import available_methods, get_method, register_method

from toy_methods import Brightness


def test_registry_finds_by_name_and_says_what_exists(toy_methods):
    assert {"saa", "lite", "toy_brightness"} <= set(available_methods())
    assert get_method("full") is get_method("saa")  # the old name keeps working
    with pytest.raises(SaaError, match=r"unknown method 'toy_brightnes'.*did you mean 'toy_brightness'"):
        get_method("toy_brightnes")
    with pytest.raises(ValueError, match="already registered"):
        register_method(type("Other", (Brightness,), {}), name="toy_brightness")
