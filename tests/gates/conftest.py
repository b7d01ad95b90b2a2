"""Helpers of the gate tests: the e2e ``run_eval`` fixture (a child pytest on the GSM8K evaluation)
and JUnit XML reading."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from tests.e2e.conftest import run_eval  # noqa: F401  (the fixture, shared with tests/e2e)


def junit_cases(path: Path) -> dict[str, dict[str, Any]]:
    """Per test case of a JUnit XML file: its properties and its failure message (None if it passed)."""
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        failure = case.find("failure")
        out[case.get("name", "")] = {
            "properties": {p.get("name"): p.get("value") for p in case.iter("property")},
            "failure": None if failure is None else (failure.get("message", "") + "\n" + (failure.text or "")),
        }
    return out
