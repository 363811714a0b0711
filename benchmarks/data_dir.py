"""Where the benchmarks (and the tests that use real data) find the external data that is not in the repository:
the directory named by the environment variable CADUCEUS_DATA_DIR, else `../shared/data` beside the repository when
present. Layout: genomes/ (FASTA), variants/ (VCF), genomic_benchmarks/ (CSV tables); see benchmarks/README.md."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "CADUCEUS_DATA_DIR"


def data_dir() -> Path:
    """$CADUCEUS_DATA_DIR, else ../shared/data next to the repository (which may not exist)."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def skipped(*paths: Path) -> str:
    """The message of a benchmark whose data is missing."""
    return f"skipped: {' or '.join(str(p) for p in paths)} not present (set {ENV} to the data directory)"
