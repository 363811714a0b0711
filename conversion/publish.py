"""Publishing a model directory (converted or trained) to the Hub in one commit: create_repo + upload_folder of the
files a model repo needs."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi

from ..configuration_caduceus import CaduceusConfig
from .errors import ConversionError

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md")
# What a model repo needs (top-level files): config, weights, tokenizer files, the card, remote code when present.
MODEL_PATTERNS = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "README.md", "*.py",
    "adapter_config.json",
)
# What Trainer writes to resume a run: uploaded only when asked for.
TRAINING_STATE_PATTERNS = (
    "optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth", "training_args.bin", "trainer_state.json",
    "checkpoint-*/**",
)


@dataclass(frozen=True)
class UploadPlan:
    """The files of a model directory, relative to it: those to upload, and those left out (Trainer state unless
    asked for, and anything that is not part of a model repo)."""

    upload: list[str]
    training_state: list[str]
    other: list[str]


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def plan_upload(folder: Path, include_training_state: bool = False) -> UploadPlan:
    """Sort the files of a complete model directory (see `check_folder`) into what `push` uploads and leaves out."""
    files = check_folder(folder)
    model = [f for f in files if "/" not in f and _matches(f, MODEL_PATTERNS)]
    state = [f for f in files if f not in model and _matches(f, TRAINING_STATE_PATTERNS)]
    other = [f for f in files if f not in model and f not in state]
    if include_training_state:
        return UploadPlan(sorted(model + state), [], other)
    return UploadPlan(model, state, other)


def check_folder(folder: Path) -> list[str]:
    """Every file of the folder (hidden ones excluded), which must be a complete model directory with a valid
    config."""
    if not folder.is_dir():
        raise ConversionError(f"{folder}: not a directory")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise ConversionError(f"{folder}: missing {missing}; create it with `caduceus-hf convert`")
    try:
        CaduceusConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ConversionError(f"{folder / 'config.json'}: not a valid Caduceus config: {err}") from None
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


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
    include_training_state: bool = False,
    api: HfApi | None = None,
) -> str | None:
    """Upload the model files of `folder` to `repo_id` as a single commit; returns the commit (or pull request) URL.

    Uploaded: config, weights, tokenizer files, README.md and remote-code .py files (MODEL_PATTERNS); Trainer state
    (optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin, trainer_state.json, checkpoint-* folders) only
    with `include_training_state`; nothing else. `revision` is the branch to upload to (created if missing). The token
    comes from `token` or huggingface_hub's usual sources (HF_TOKEN, `hf auth login`). With dry_run nothing is
    contacted: the target and the files, uploaded and left out, are printed.
    """
    folder = Path(folder)
    plan = plan_upload(folder, include_training_state)
    target = f"https://huggingface.co/{repo_id}" + (f" (branch {revision})" if revision else "")
    flags = ", ".join(f for f, on in (("private", private), ("as a pull request", create_pr)) if on)
    if dry_run:
        print(f"dry run: would upload {len(plan.upload)} files to {target}" + (f" [{flags}]" if flags else ""))
        for name in plan.upload:
            print(f"  {name}")
        if plan.training_state:
            print(f"left out, Trainer state ({len(plan.training_state)} files; --include-training-state uploads them):")
            for name in plan.training_state:
                print(f"  {name}")
        if plan.other:
            print(f"left out, not part of a model repo ({len(plan.other)} files):")
            for name in plan.other:
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
        allow_patterns=plan.upload,
        commit_message=commit_message or "Upload Caduceus model with caduceus-hf",
    )
    url = getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or str(info)
    print(f"uploaded {len(plan.upload)} files to {target}: {url}")
    return url
