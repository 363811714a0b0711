"""Fetch transformers' common test mixins for the installed transformers version, from its source distribution.

    python scripts/fetch_transformers_tests.py [DEST]

DEST defaults to $TRANSFORMERS_TESTS_DIR, else .transformers-tests/ in the repository root (git-ignored). The top-level
tests/*.py files of the sdist (ModelTesterMixin, ConfigTester, TokenizerTesterMixin, ...) land in DEST/hf_tests/, an
importable package (put DEST on sys.path, then `from hf_tests.test_modeling_common import ModelTesterMixin`). Nothing is
copied into the repository: the files are downloaded from the package index at test time. A second run with the same
version does nothing. Prints DEST.

The sdist lacks the sibling folders that those files import from (tests/exporters/, tests/generation/, tests/utils/);
our own small modules in tests/transformers_suite/shims/ are installed in their place (SHIMS).
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
SHIM_DIR = ROOT / "tests" / "transformers_suite" / "shims"
# Module path inside hf_tests -> our file in SHIM_DIR.
SHIMS = {
    "exporters/test_export.py": "export_tester.py",
    "generation/test_utils.py": "generation_tester.py",
    "utils/test_configuration_utils.py": "configuration_kwargs.py",
}


def default_dest() -> Path:
    return Path(os.environ.get("TRANSFORMERS_TESTS_DIR") or ROOT / ".transformers-tests")


def fetch(dest: Path) -> Path:
    version = importlib.metadata.version("transformers")
    package = dest / PACKAGE
    stamp = package / "VERSION"
    if stamp.is_file() and stamp.read_text().strip() == version:
        install_shims(package)
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
        install_shims(staged)
        (staged / "VERSION").write_text(version + "\n")
        if package.exists():
            shutil.rmtree(package)
        staged.rename(package)
    return dest


def install_shims(package: Path) -> None:
    """Copy our stand-in modules into the fetched package (again each time: they are ours and may change)."""
    for target, source in SHIMS.items():
        path = package / target
        path.parent.mkdir(exist_ok=True)
        (path.parent / "__init__.py").touch()
        text = (SHIM_DIR / source).read_text()
        if not path.is_file() or path.read_text() != text:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)


def main() -> None:
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else default_dest()
    print(fetch(dest))


if __name__ == "__main__":
    main()
