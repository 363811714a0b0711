"""Conversion of original Caduceus checkpoints to native caduceus-hf directories, and publishing to the Hub.

This folder is installed as `caduceus_hf.conversion` (setup.cfg maps it there, so no top-level `conversion` package
lands in site-packages). Command line: `caduceus-hf convert SRC DST` and `caduceus-hf push DIR REPO_ID`.
"""

from .convert import ConversionReport, convert
from .errors import ConversionError
from .publish import push

__all__ = ["ConversionError", "ConversionReport", "convert", "push"]
