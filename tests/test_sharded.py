"""caduceus_hf.apps.sharded: streamed, block-sharded and resumable embed / score-variants.

A tiny perturbed MLM and synthetic FASTA / VCF files in tmp_path. Files written by the streaming path are compared
with the in-memory API (an independent assembly of the same numbers), 2-rank torchrun (gloo) runs with one process,
and resumed runs with uninterrupted ones, byte for byte where the computation is the same.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
from conftest import save_tiny_mlm

from caduceus_hf.apps import embed_fasta, embed_to_file, score_variants, score_variants_to_file
from caduceus_hf.apps import embed as embed_module
from caduceus_hf.apps import variants as variants_module
from caduceus_hf.apps.sharded import work_dir_of
from caduceus_hf.cli import main as cli_main
from caduceus_hf.genomics import VcfRecord, tile

GENOME = "".join(np.random.default_rng(3).choice(list("ACGT"), 1500))
CLI = Path(sys.executable).parent / "caduceus-hf"
HEADER = (
    "##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1500>\n"
    '##INFO=<ID=LABEL,Number=1,Type=Integer,Description="1 pathogenic, 0 benign">\n'
    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
)


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    return save_tiny_mlm(tmp_path_factory.mktemp("mlm"))


@pytest.fixture
def fasta(tmp_path):
    path = tmp_path / "ref.fa"
    path.write_text(">chr1\n" + "".join(GENOME[i : i + 70] + "\n" for i in range(0, len(GENOME), 70)))
    return path


def write_vcf(path: Path, positions) -> Path:
    rows = []
    for i, pos in enumerate(positions):
        ref = GENOME[pos - 1]
        alts = [b for b in "ACGT" if b != ref]
        alt = alts[i % 3] if i % 11 else f"{alts[0]},{alts[1]}"  # some multi-allelic records
        rows.append(f"chr1\t{pos}\tv{i}\t{ref}\t{alt}\t.\t.\tLABEL={i % 2}\n")
    path.write_text(HEADER + "".join(rows))
    return path


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def assert_same_tsv(got: Path, expected: Path, score_columns=(5,)) -> None:
    a, b = read_tsv(got), read_tsv(expected)
    assert len(a) == len(b) and a[0] == b[0]
    for row_a, row_b in zip(a[1:], b[1:]):
        assert [c for i, c in enumerate(row_a) if i not in score_columns] == \
            [c for i, c in enumerate(row_b) if i not in score_columns]
        for i in score_columns:
            assert float(row_a[i]) == pytest.approx(float(row_b[i]), abs=1e-5)


# --- one process: the streamed files hold what the in-memory API computes -------------------------------------------


def test_streamed_tsv_equals_the_in_memory_scores(mlm_dir, fasta, tmp_path):
    vcf = write_vcf(tmp_path / "v.vcf", [5, 5, 700, 1500, *range(20, 1400, 37)])
    options = dict(window=24, rc_average=True, circular=True, label_key="LABEL", device="cpu", batch_size=4)
    expected = score_variants(vcf, fasta, mlm_dir, **options)
    run = score_variants_to_file(vcf, fasta, tmp_path / "s.tsv", mlm_dir, block_size=7, **options)
    assert_same_tsv(run.out, expected.write_tsv(tmp_path / "expected.tsv"), score_columns=(5, 6, 7))
    result = run.merged
    assert (result.scored, result.records) == (len(expected.variants), expected.records)
    assert result.auroc() == pytest.approx(expected.auroc(), abs=1e-6)
    assert result.summary().splitlines()[:3] == expected.summary().splitlines()[:3]
    assert [r.blocks for r in run.ranks] == [-(-expected.records // 7)]
    assert not work_dir_of(run.out).exists(), "the work directory is removed once the output is in place"


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_streamed_embeddings_equal_the_in_memory_ones(mlm_dir, tmp_path, suffix):
    fasta = tmp_path / "in.fa"
    fasta.write_text(f">a\n{GENOME[:700]}\n>b x\n{GENOME[900:1013]}\n")
    expected = embed_fasta(fasta, mlm_dir, window=50, stride=30, device="cpu")
    run = embed_to_file(fasta, tmp_path / f"e{suffix}", mlm_dir, window=50, stride=30, device="cpu", block_size=4)
    assert run.merged.rows == len(expected) == 27
    if suffix == ".npz":
        got, want = np.load(run.out), np.load(expected.save(tmp_path / "expected.npz"))
        assert sorted(got.files) == sorted(want.files)
        for key in got.files:
            if key == "embeddings":
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
            else:
                assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        got, want = pq.read_table(run.out), pq.read_table(expected.save(tmp_path / "expected.parquet"))
        assert got.schema == want.schema and got.schema.metadata == want.schema.metadata
        assert got.drop(["embedding"]).equals(want.drop(["embedding"]))
        np.testing.assert_allclose(np.stack(got.column("embedding").to_numpy(zero_copy_only=False)),
                                   expected.vectors, rtol=1e-5, atol=1e-6)
        assert pq.ParquetFile(run.out).num_row_groups == 7, "one row group per block: written incrementally"


# --- bounded memory ---------------------------------------------------------------------------------------------------


class LiveCount:
    """Counts objects alive among those `track` saw, and the most alive at once."""

    def __init__(self) -> None:
        self.live = self.peak = self.seen = 0

    def track(self, obj):
        self.live += 1
        self.seen += 1
        self.peak = max(self.peak, self.live)
        weakref.finalize(obj, self._gone)
        return obj

    def _gone(self) -> None:
        self.live -= 1


def test_score_variants_holds_a_bounded_number_of_records(mlm_dir, fasta, tmp_path, monkeypatch):
    count, n, block = LiveCount(), 3000, 100

    def many_records(vcf, label_key=None):
        for i in range(n):
            pos = 1 + (i * 7919) % len(GENOME)
            ref = GENOME[pos - 1]
            yield count.track(VcfRecord("chr1", pos, ".", ref, ("A" if ref != "A" else "C",), None, 5 + i))

    vcf = write_vcf(tmp_path / "placeholder.vcf", [1])
    monkeypatch.setattr(variants_module, "read_vcf", many_records)
    run = score_variants_to_file(vcf, fasta, tmp_path / "s.tsv", mlm_dir, window=8, batch_size=64,
                                 block_size=block, device="cpu")
    assert count.seen == n and run.merged.scored == n
    assert len(run.out.read_text().splitlines()) == n + 1
    # One block in flight and the record being read: never the whole input.
    assert count.peak <= block + 1, count.peak


def test_embed_holds_a_bounded_number_of_windows(mlm_dir, tmp_path, monkeypatch):
    fasta = tmp_path / "long.fa"
    fasta.write_text(">x\n" + "".join(GENOME[i : i + 60] + "\n" for i in range(0, len(GENOME), 60)) * 4)
    count, block, original = LiveCount(), 16, embed_module._windows
    monkeypatch.setattr(embed_module, "_windows", lambda *a: (count.track(w) for w in original(*a)))
    run = embed_to_file(fasta, tmp_path / "e.npz", mlm_dir, window=10, device="cpu", block_size=block)
    assert count.seen == run.merged.rows == 600
    assert count.peak <= block + 1, count.peak


# --- resume -----------------------------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so nothing handles it on the way out."""


def test_an_interrupted_run_resumes_to_the_same_file(mlm_dir, fasta, tmp_path, monkeypatch):
    vcf = write_vcf(tmp_path / "v.vcf", list(range(3, 1500, 23)))  # 66 records: 9 blocks of 8
    options = dict(window=16, label_key="LABEL", device="cpu", block_size=8, threads=1)
    uninterrupted = score_variants_to_file(vcf, fasta, tmp_path / "whole.tsv", mlm_dir, **options)

    out, original, calls = tmp_path / "s.tsv", variants_module._score_block, []

    def dies_at_the_fourth_block(*args):
        calls.append(1)
        if len(calls) == 4:
            raise Killed
        return original(*args)

    monkeypatch.setattr(variants_module, "_score_block", dies_at_the_fourth_block)
    with pytest.raises(Killed):
        score_variants_to_file(vcf, fasta, out, mlm_dir, **options)
    monkeypatch.setattr(variants_module, "_score_block", original)
    assert not out.exists()
    assert sorted(p.name for p in work_dir_of(out).glob("block-*")) == [f"block-{i:09d}.tsv" for i in range(3)]

    with pytest.raises(ValueError, match=r"--resume: .*s\.tsv\.parts was made by a run with other settings "
                                         r"\(window: 16 then, 17 now\)"):
        score_variants_to_file(vcf, fasta, out, mlm_dir, resume=True, **{**options, "window": 17})
    resumed = score_variants_to_file(vcf, fasta, out, mlm_dir, resume=True, **options)
    assert (resumed.ranks[0].resumed, resumed.ranks[0].computed) == (3, 6)
    assert out.read_bytes() == uninterrupted.out.read_bytes()
    assert resumed.merged.auroc() == uninterrupted.merged.auroc()
    assert not work_dir_of(out).exists()


def test_a_foreign_work_directory_is_never_deleted(mlm_dir, fasta, tmp_path):
    vcf = write_vcf(tmp_path / "v.vcf", [10, 20])
    foreign = tmp_path / "s.tsv.parts"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"s\.tsv\.parts exists and is not a caduceus-hf work directory"):
        score_variants_to_file(vcf, fasta, tmp_path / "s.tsv", mlm_dir, window=8, device="cpu")
    assert (foreign / "precious.txt").read_text() == "mine"


def test_a_failed_single_run_leaves_nothing_behind(mlm_dir, fasta, tmp_path):
    vcf = tmp_path / "v.vcf"
    vcf.write_text(HEADER + "chr1\t10\t.\tA\tG\t.\t.\tLABEL=3\n")
    out = tmp_path / "s.tsv"
    with pytest.raises(ValueError, match=r"v\.vcf:5: label LABEL='3' is not 0 or 1"):
        score_variants_to_file(vcf, fasta, out, mlm_dir, window=8, label_key="LABEL", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.fa", "v.vcf"]


# --- several processes (torchrun, gloo) -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--no-python", str(CLI), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    # Its own session, so that the whole group can be killed on the way out.
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@contextlib.contextmanager
def reaped(proc: subprocess.Popen):
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{stdout}\n{stderr}"[-6000:])
    return proc.returncode, stdout + stderr


def test_two_ranks_score_variants_like_one_process(mlm_dir, fasta, tmp_path):
    vcf = write_vcf(tmp_path / "v.vcf", list(range(3, 1500, 29)))
    common = ["score-variants", "--vcf", str(vcf), "--fasta", str(fasta), "--model", str(mlm_dir), "--window", "16",
              "--circular", "--label-key", "LABEL", "--block-size", "6", "--device", "cpu"]
    assert cli_main(common + ["--out", str(tmp_path / "one.tsv")]) == 0
    with reaped(torchrun(common + ["--out", str(tmp_path / "two.tsv")])) as proc:
        code, output = finish(proc)
    assert code == 0, output[-4000:]
    assert_same_tsv(tmp_path / "two.tsv", tmp_path / "one.tsv")
    # Rank 0 alone reports: the summary once, with the counts of both ranks (9 blocks: 5 and 4).
    assert output.count("scored 57 SNVs from 52 VCF records") == 1
    assert "rank 0: 5 blocks (28 records)" in output and "rank 1: 4 blocks (24 records)" in output


def test_two_ranks_embed_like_one_process(mlm_dir, tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(f">a\n{GENOME[:800]}\n>b\n{GENOME[800:1111]}\n")
    common = ["embed", "--fasta", str(fasta), "--model", str(mlm_dir), "--window", "64", "--stride", "50",
              "--block-size", "3", "--device", "cpu"]
    assert cli_main(common + ["--out", str(tmp_path / "one.npz")]) == 0
    with reaped(torchrun(common + ["--out", str(tmp_path / "two.npz")])) as proc:
        code, output = finish(proc)
    assert code == 0, output[-4000:]
    one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert sorted(one.files) == sorted(two.files) and len(two["ids"]) == len(tile(800, 64, 50)) + len(tile(311, 64, 50))
    for key in one.files:
        if key == "embeddings":
            np.testing.assert_allclose(two[key], one[key], rtol=1e-5, atol=1e-5)
        else:
            assert np.array_equal(two[key], one[key]), key


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker of `rank` among the children of `parent` (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes in /proc")
def test_sigkill_of_one_rank_then_resume_gives_the_same_file(mlm_dir, fasta, tmp_path):
    vcf = write_vcf(tmp_path / "v.vcf", [1 + (i * 37) % 1500 for i in range(400)])
    common = ["score-variants", "--vcf", str(vcf), "--fasta", str(fasta), "--model", str(mlm_dir), "--window", "16",
              "--block-size", "4", "--batch-size", "1", "--device", "cpu", "--threads", "1"]
    out = tmp_path / "s.tsv"
    parts = work_dir_of(out)
    with reaped(torchrun(common + ["--out", str(out)])) as proc:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(list(parts.glob("block-*"))) < 4:
            time.sleep(0.05)
        victim = _rank_pid(proc.pid, 1)
        assert victim is not None, "rank 1 not found"
        os.kill(victim, signal.SIGKILL)
        code, output = finish(proc)
    assert code != 0 and not out.exists(), output[-3000:]
    done = len(list(parts.glob("block-*")))
    assert 4 <= done < 100, "killed midway"

    assert cli_main(common + ["--out", str(out), "--resume"]) == 0
    assert cli_main(common + ["--out", str(tmp_path / "whole.tsv")]) == 0
    assert out.read_bytes() == (tmp_path / "whole.tsv").read_bytes()
    assert not parts.exists()


def test_a_roc_plot_without_both_classes_fails_before_anything_is_written(mlm_dir, fasta, tmp_path, capsys):
    vcf = write_vcf(tmp_path / "v.vcf", [10, 30, 50])
    vcf.write_text(vcf.read_text().replace("LABEL=1", "LABEL=0"))
    args = ["score-variants", "--vcf", str(vcf), "--fasta", str(fasta), "--model", str(mlm_dir), "--window", "8",
            "--label-key", "LABEL", "--roc-png", str(tmp_path / "roc.png"), "--out", str(tmp_path / "s.tsv"),
            "--block-size", "2"]
    assert cli_main(args) == 1
    assert "the ROC curve needs labelled variants of both classes (LABEL 0 and 1)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.fa", "v.vcf"]


def test_the_progress_bar_counts_the_whole_run_on_rank_0(tmp_path, monkeypatch):
    """One bar with the total across ranks, brought to that total by the part files at the end."""
    import tqdm

    from caduceus_hf.apps.sharded import BlockTask, Workers, run_blocks

    bars = []

    class Recorder:
        def __init__(self, total=None, disable=None, **_):
            self.total, self.n, self.disable = total, 0, disable
            bars.append(self)

        def update(self, n):
            self.n += n

        def close(self):
            pass

    monkeypatch.setattr(tqdm, "tqdm", Recorder)
    task = BlockTask(
        name="count", settings={}, suffix=".txt", compute=lambda block: " ".join(map(str, block)).encode(),
        is_complete=lambda part: part.stat().st_size > 0,
        merge=lambda parts, out: out.write_bytes(b"\n".join(p.read_bytes() for p in parts)),
    )
    out = tmp_path / "out.txt"
    run = run_blocks(task, range(10), out, Workers(), block_size=3, progress=True, total=lambda: 10, unit="item")
    assert out.read_text() == "0 1 2\n3 4 5\n6 7 8\n9"
    assert run.ranks_line() == "rank 0: 4 blocks (10 items) in %.1f s, %s items/s" % (
        run.ranks[0].seconds, f"{10 / run.ranks[0].seconds:,.1f}")
    [bar] = bars
    assert bar.total == 10 and bar.n == 10 and bar.disable is None, "shown on rank 0, complete at the end"
    run_blocks(task, range(10), out, Workers(rank=0, world_size=1), block_size=3, progress=False)
    assert bars[-1].disable is True, "no bar unless asked"
