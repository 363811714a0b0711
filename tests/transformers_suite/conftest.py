"""transformers' own common test mixins, fetched from the sdist of the installed transformers version.

scripts/fetch_transformers_tests.py downloads them (package index only) into $TRANSFORMERS_TESTS_DIR or
.transformers-tests/; this conftest fetches them on first use and puts them on sys.path as the package `hf_tests`.
Offline, the modules here skip with the reason, except under CI (CI=true or CADUCEUS_REQUIRE_HF_SUITE=1), where a
missing suite is an error: CI must run it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_fetcher():
    spec = importlib.util.spec_from_file_location("fetch_transformers_tests", ROOT / "scripts" / "fetch_transformers_tests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _required() -> bool:
    return os.environ.get("CADUCEUS_REQUIRE_HF_SUITE") == "1" or os.environ.get("CI", "").lower() == "true"


def _ensure_suite() -> str | None:
    """Put the fetched suite on sys.path; the reason it is unavailable, or None."""
    fetcher = _load_fetcher()
    try:
        dest = fetcher.fetch(fetcher.default_dest())
    except Exception as err:  # noqa: BLE001 - offline, no pip, a broken index: all mean "cannot run here"
        if _required():
            raise
        return f"transformers' common tests could not be fetched ({type(err).__name__}: {err})"
    if str(dest) not in sys.path:
        sys.path.insert(0, str(dest))
    return None


SUITE_UNAVAILABLE = _ensure_suite()


# Markers that transformers' test files put on their tests (the repository runs with --strict-markers).
HF_MARKERS = ("accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test")


def pytest_configure(config):
    for marker in HF_MARKERS:
        config.addinivalue_line("markers", f"{marker}: used by transformers' common tests")


def pytest_collection_modifyitems(config, items):
    if SUITE_UNAVAILABLE is None:
        return
    skip = pytest.mark.skip(reason=SUITE_UNAVAILABLE)
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(skip)
