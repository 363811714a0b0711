"""Block-sharded, resumable inference over streamed input, in one process or across torch.distributed ranks.

The work is a stream of items (VCF records, sequence windows) cut into blocks of `block_size` items in input order,
numbered 0, 1, ...; rank r of a world of n processes computes the blocks whose number is r modulo n (every rank reads
the whole input, which is cheap next to the model, so the assignment needs no communication and does not depend on
timing). Each finished block is written atomically as its own part file in the work directory OUT.parts next to the
output, with a manifest of the run's settings; rank 0 merges the parts in block order into OUT (temporary name, then
rename) and removes the work directory. One process is the same code with a world of one, so a single process and n
ranks write the same file.

Resume: with `resume`, parts already present (and complete) are kept and only the missing blocks are computed; the
manifest must match the run's settings, else the run stops with an error naming what differs. Since the parts do not
depend on the number of ranks, a run may resume with a different world size. Without `resume` an existing work
directory of this kind is discarded. A killed run leaves its work directory; a completed run removes it.

Processes: torch.distributed is initialised only when a launcher (torchrun, accelerate launch, SLURM + torchrun) sets
RANK and WORLD_SIZE with more than one process; gloo on CPU, NCCL with one GPU per rank (cuda:LOCAL_RANK). Each rank
uses cores / local world size torch threads unless told otherwise. The work directory must be on a file system that
every node sees (rank 0 merges what the others wrote).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from ..genomics import check_input_file, check_positive, require, write_file_atomically

Item = TypeVar("Item")
Result = TypeVar("Result")

MANIFEST = "manifest.json"
WORK_DIR_SUFFIX = ".parts"
MANIFEST_FORMAT = "caduceus-hf sharded inference 1"
# Ranks wait for each other only at the end; a long wait there is the slowest rank finishing its last block.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class Workers:
    """This process's place in the run: rank of world_size, and local_rank of local_world_size on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def broadcast(self, value: Any) -> Any:
        """`value` of rank 0, on every rank."""
        if self.world_size == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def launched_workers() -> Workers:
    """The ranks a launcher set in the environment (torchrun, accelerate launch), else a world of one."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return Workers()
    world = int(env["WORLD_SIZE"])
    return Workers(
        rank=int(env["RANK"]), world_size=world, local_rank=int(env.get("LOCAL_RANK", 0)),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
    )


@contextlib.contextmanager
def process_group(device: str | None, threads: int | None = None) -> Iterator[tuple[Workers, str | None]]:
    """Join the launcher's process group (if any) and pick this rank's device and threads.

    Yields the Workers and the device to load the model on: with several ranks and CUDA available (device None,
    "auto" or "cuda"), cuda:LOCAL_RANK with NCCL; otherwise the device as given, with gloo. `threads` None: cores /
    local world size torch threads. A process group that already exists (accelerate, the caller) is used and left
    as it is; one created here is destroyed on the way out.
    """
    workers = launched_workers()
    if threads is not None:
        torch.set_num_threads(check_positive(threads, "threads"))
    elif workers.world_size > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // workers.local_world_size))
    if workers.world_size == 1:
        yield workers, device
        return
    use_cuda = torch.cuda.is_available() and (device is None or device in ("auto", "cuda"))
    if use_cuda:
        torch.cuda.set_device(workers.local_rank)
        device = f"cuda:{workers.local_rank}"
    created = not torch.distributed.is_initialized()
    if created:
        torch.distributed.init_process_group(
            backend="nccl" if use_cuda else "gloo", timeout=PROCESS_GROUP_TIMEOUT,
            **({"device_id": torch.device(device)} if use_cuda else {}),
        )
    try:
        yield workers, device
    finally:
        if created and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    """Consecutive lists of `size` items (the last may be shorter); only one list is held at a time."""
    block: list[Item] = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


@dataclass
class RankReport:
    """What one rank did: blocks computed and found done (resume), items computed, seconds, and the number of blocks
    the input made (every rank counts them; they must agree)."""

    rank: int
    computed: int = 0
    resumed: int = 0
    items: int = 0
    seconds: float = 0.0
    blocks: int = 0

    def line(self, unit: str = "item") -> str:
        """"rank R: B blocks (N UNITs) in S s, X UNITs/s[, K blocks already done]"."""
        rate = f", {self.items / self.seconds:,.1f} {unit}s/s" if self.seconds > 0 and self.items else ""
        blocks = f"{self.computed:,} block{'' if self.computed == 1 else 's'}"
        return (f"rank {self.rank}: {blocks} ({self.items:,} {unit}s) in {self.seconds:.1f} s{rate}"
                f"{f', {self.resumed:,} blocks already done' if self.resumed else ''}")


@dataclass
class ShardedRun(Generic[Result]):
    """The outcome on rank 0: the merged output, what the merge returned, and every rank's report."""

    out: Path
    merged: Result
    ranks: list[RankReport] = field(default_factory=list)
    unit: str = "item"

    def ranks_line(self) -> str:
        """What each rank did, e.g. "rank 0: 5 blocks (5,120 records) in 12.0 s, 426.7 records/s; rank 1: ..."."""
        return "; ".join(report.line(self.unit) for report in self.ranks)


@dataclass(frozen=True)
class BlockTask(Generic[Item, Result]):
    """How to compute one block into the bytes of its part file, recognise a complete part, and merge the parts
    (in block order) into the output. `settings` identify the run (the manifest); `suffix` is the parts' extension."""

    name: str
    settings: dict[str, Any]
    suffix: str
    compute: Callable[[list[Item]], bytes]
    is_complete: Callable[[Path], bool]
    merge: Callable[[list[Path], Path], Result]


def work_dir_of(out: Path) -> Path:
    return out.with_name(out.name + WORK_DIR_SUFFIX)


def _prepare_work_dir(work: Path, manifest: dict[str, Any], resume: bool) -> int:
    """Create, reuse (resume) or replace the work directory; returns the number of parts kept."""
    path = work / MANIFEST
    if work.exists():
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            found = None
        if not isinstance(found, dict) or found.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"{work} exists and is not a caduceus-hf work directory (no valid {MANIFEST}); "
                             "move it away or choose another --out")
        if resume:
            differ = sorted(key for key in set(found) | set(manifest) if found.get(key) != manifest.get(key))
            if differ:
                details = "; ".join(f"{key}: {found.get(key)!r} then, {manifest.get(key)!r} now" for key in differ)
                raise ValueError(f"--resume: {work} was made by a run with other settings ({details}); rerun "
                                 "without --resume to start over")
            for stale in work.iterdir():
                # Reports of the previous attempt, and temporary files of writes a kill interrupted.
                if stale.name.startswith(("rank-", ".")):
                    stale.unlink()
            return sum(1 for p in work.iterdir() if p.name.startswith("block-"))
        shutil.rmtree(work)
    work.mkdir()
    write_file_atomically(path, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return 0


def run_blocks(
    task: BlockTask[Item, Result],
    items: Iterable[Item],
    out: Path,
    workers: Workers,
    *,
    block_size: int,
    resume: bool = False,
    progress: bool = False,
    total: Callable[[], int | None] | None = None,
    unit: str = "item",
) -> ShardedRun[Result] | None:
    """Compute this rank's blocks of `items`, then (rank 0) merge every block into `out`.

    Returns the ShardedRun on rank 0 and None on the other ranks. `total` (called on rank 0 when `progress`) counts
    the items for the progress bar, which shows the work of all ranks (rank 0 counts the part files).
    """
    check_positive(block_size, "block_size")
    out = Path(out)
    work = work_dir_of(out)
    # Through JSON, so that it compares equal to the manifest read back on --resume.
    manifest = json.loads(json.dumps({"format": MANIFEST_FORMAT, "command": task.name, "block_size": block_size,
                                      **task.settings}))
    error, kept = None, 0
    if workers.is_main:
        try:
            kept = _prepare_work_dir(work, manifest, resume)
        except ValueError as err:
            error = str(err)
    # Every rank stops on a bad work directory, not only rank 0.
    error = workers.broadcast(error)
    if error is not None:
        raise ValueError(error)
    workers.barrier()

    tqdm = require("tqdm", "the progress bar").tqdm
    show = progress and workers.is_main
    bar = tqdm(total=total() if show and total is not None else None, unit=unit, unit_scale=True,
               desc=task.name, disable=None if show else True)
    if show and resume and kept:
        bar.update(min(kept * block_size, bar.total or kept * block_size))

    last_scan = 0.0

    def show_progress(force: bool = False) -> None:
        # Rank 0 counts the part files of every rank, at most once a second (the directory may hold thousands).
        nonlocal last_scan
        if show and (force or time.monotonic() - last_scan > 1.0):
            last_scan = time.monotonic()
            done = sum(1 for p in work.iterdir() if p.name.startswith("block-")) * block_size
            bar.update(max(0, min(done, bar.total or done) - bar.n))

    report = RankReport(workers.rank)
    start = time.perf_counter()
    try:
        # Not enumerate(): it keeps the previous block alive while the next one is read.
        index = -1
        for block in batched(items, block_size):
            index += 1
            report.blocks = index + 1
            part = work / f"block-{index:09d}{task.suffix}"
            if index % workers.world_size != workers.rank:
                pass
            elif resume and part.exists() and task.is_complete(part):
                report.resumed += 1
            else:
                write_file_atomically(part, task.compute(block))
                report.computed += 1
                report.items += len(block)
                show_progress()
            # Not held while the next block is read: one block in memory at a time.
            del block
        report.seconds = time.perf_counter() - start
        write_file_atomically(work / f"rank-{workers.rank}.json", json.dumps(asdict(report)).encode())
        if show:
            # The other ranks' progress while they finish (they wait at the barrier below).
            deadline = time.monotonic() + PROCESS_GROUP_TIMEOUT.total_seconds()
            while (sum(1 for p in work.iterdir() if p.name.startswith("rank-")) < workers.world_size
                   and time.monotonic() < deadline):
                show_progress()
                time.sleep(0.5)
        workers.barrier()
        result, merge_error = None, None
        if workers.is_main:
            try:
                show_progress(force=True)
                result = _merge(task, work, out, workers.world_size, unit)
            except (ValueError, OSError) as err:
                merge_error = err
        failed = workers.broadcast(None if merge_error is None else f"{type(merge_error).__name__}: {merge_error}")
        if merge_error is not None:
            raise merge_error
        if failed is not None:
            raise RuntimeError(f"rank 0 could not merge the parts into {out}: {failed}")
        return result
    except Exception:
        # A failed single process without --resume leaves nothing behind (its input or settings are likely at
        # fault); killed runs, --resume runs and ranks of a launcher keep their finished parts.
        if workers.world_size == 1 and not resume:
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        bar.close()


def _merge(task: BlockTask[Any, Result], work: Path, out: Path, world_size: int, unit: str) -> ShardedRun[Result]:
    reports = [RankReport(**json.loads((work / f"rank-{rank}.json").read_text())) for rank in range(world_size)]
    counts = {r.blocks for r in reports}
    if len(counts) != 1:
        raise ValueError(f"the ranks read different numbers of blocks from the input ({sorted(counts)}); "
                         "was an input file changed during the run?")
    blocks = counts.pop()
    parts = [work / f"block-{index:09d}{task.suffix}" for index in range(blocks)]
    missing = [p.name for p in parts if not p.is_file()]
    if missing:
        raise ValueError(f"{len(missing)} part(s) missing in {work}, e.g. {missing[0]}")
    merged = task.merge(parts, out)
    shutil.rmtree(work, ignore_errors=True)
    return ShardedRun(out, merged, reports, unit)


def file_fingerprint(path: str | os.PathLike[str] | None, kind: str) -> dict[str, Any] | None:
    """What identifies an input file for --resume: its absolute path, size and modification time. A missing or
    unreadable file is an error naming it as a `kind` file."""
    if path is None:
        return None
    stat = check_input_file(path, kind).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def model_fingerprint(model: Any) -> Any:
    """What identifies a model for --resume: a local directory's files (names, sizes, modification times), else the
    name it was loaded by."""
    name = str(getattr(model, "name_or_path", "") or "")
    if name and Path(name).is_dir():
        return {"dir": str(Path(name).resolve()),
                "files": sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(name).iterdir()
                                if p.is_file())}
    return name


__all__ = [
    "BlockTask",
    "RankReport",
    "ShardedRun",
    "Workers",
    "batched",
    "file_fingerprint",
    "launched_workers",
    "model_fingerprint",
    "process_group",
    "run_blocks",
    "work_dir_of",
]
