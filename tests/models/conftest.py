"""Helpers of the model tests, handed to tests by name: ``one_line`` (asserts a message is one line
without a traceback and returns it) and ``grounding_detectors`` ({backend: detector class} of both
Grounding DINO backends)."""
from __future__ import annotations

import pytest


def one_line(msg: str) -> str:
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def grounding_detectors() -> dict:
    from saa.models.grounding import GroundingDetector
    from saa.models.hf_grounding import HFGroundingDetector

    return {"groundingdino": GroundingDetector, "transformers": HFGroundingDetector}


@pytest.fixture(scope="session", name="one_line")
def _one_line_fixture():
    return one_line


@pytest.fixture(scope="session", name="grounding_detectors")
def _grounding_detectors_fixture():
    return grounding_detectors
