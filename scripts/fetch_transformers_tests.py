"""Fetch transformers' common test mixins for the installed transformers version, from its source distribution.

    python scripts/fetch_transformers_tests.py [DEST]

DEST defaults to $TRANSFORMERS_TESTS_DIR, else .transformers-tests/ in the repository root (git-ignored). The top-level
tests/*.py files of the sdist (ModelTesterMixin, ConfigTester, TokenizerTesterMixin, ...) land in DEST/hf_tests/, an
importable package (put DEST on sys.path, then `from hf_tests.test_modeling_common import ModelTesterMixin`). Nothing is
copied into the repository: the files are downloaded from the package index at test time. A second run with the same
version does nothing. Prints DEST.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hf_tests"


def default_dest() -> Path:
    return Path(os.environ.get("TRANSFORMERS_TESTS_DIR") or ROOT / ".transformers-tests")


def fetch(dest: Path) -> Path:
    version = importlib.metadata.version("transformers")
    package = dest / PACKAGE
    stamp = package / "VERSION"
    if stamp.is_file() and stamp.read_text().strip() == version:
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps",
             f"transformers=={version}", "-d", tmp],
            check=True,
        )
        sdist = next(Path(tmp).glob("transformers-*.tar.gz"))
        staged = Path(tmp) / PACKAGE
        staged.mkdir()
        prefix = f"{sdist.name[: -len('.tar.gz')]}/tests/"
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = member.name
                if member.isfile() and name.startswith(prefix) and "/" not in name[len(prefix):] and name.endswith(".py"):
                    source = tar.extractfile(member)
                    (staged / name[len(prefix):]).write_bytes(source.read())
        (staged / "__init__.py").write_text("")
        (staged / "VERSION").write_text(version + "\n")
        if package.exists():
            shutil.rmtree(package)
        staged.rename(package)
    return dest


def main() -> None:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else default_dest()
    print(fetch(dest))


if __name__ == "__main__":
    main()
