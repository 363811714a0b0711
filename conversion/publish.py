"""Publishing a converted directory to the Hub in one commit (create_repo + upload_folder)."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import HfApi

from ..configuration_caduceus import CaduceusConfig
from .errors import ConversionError

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md")


def check_folder(folder: Path) -> list[str]:
    """The files that would be uploaded; the folder must be a complete converted directory with a valid config."""
    if not folder.is_dir():
        raise ConversionError(f"{folder}: not a directory")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ConversionError(f"{folder}: missing {missing}; create it with `caduceus-hf convert`")
    try:
        CaduceusConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ConversionError(f"{folder / 'config.json'}: not a valid Caduceus config: {err}") from None
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    dry_run: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    api: HfApi | None = None,
) -> str | None:
    """Upload `folder` to `repo_id` as a single commit; returns the commit (or pull request) URL.

    The token comes from `token` or huggingface_hub's usual sources (HF_TOKEN, `hf auth login`). With dry_run nothing
    is contacted: the target and the files are printed.
    """
    folder = Path(folder)
    files = check_folder(folder)
    target = f"https://huggingface.co/{repo_id}" + (f" (revision {revision})" if revision else "")
    flags = ", ".join(f for f, on in (("private", private), ("as a pull request", create_pr)) if on)
    if dry_run:
        print(f"dry run: would upload {len(files)} files to {target}" + (f" [{flags}]" if flags else ""))
        for name in files:
            print(f"  {name}")
        return None
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    if revision and not create_pr:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message or f"Upload Caduceus model converted with caduceus-hf",
    )
    url = getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or str(info)
    print(f"uploaded {len(files)} files to {target}: {url}")
    return url
