"""Optional dependencies (the [train] and [apps] extras): import one, or fail with a message naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says what needs it and which extra provides it."""


def install_hint(extra: str) -> str:
    return f"pip install 'caduceus-hf[{extra}]'"


def require(module: str, purpose: str, extra: str) -> ModuleType:
    """`module` imported, or MissingExtraError: "<purpose> needs <module>, which is not installed: pip install ..."."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(f"{purpose} needs {module}, which is not installed: {install_hint(extra)}") from err


__all__ = ["MissingExtraError", "install_hint", "require"]
