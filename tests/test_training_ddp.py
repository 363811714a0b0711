"""DDP on CPU: torchrun starts two gloo processes that train with Trainer; their parameters must stay identical."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).parent / "training_ddp_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_train_in_sync(tmp_path):
    pytest.importorskip("accelerate")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(WORKER), str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    # torchrun and its workers get their own process group, so that a hang or a failed assertion never leaves
    # orphaned workers behind: the whole group is killed on the way out.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s:\n{stdout}\n{stderr}"[-6000:])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]

    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["data_digest"] != ranks[1]["data_digest"], "each rank trains on its own shard of the data"
    assert ranks[0]["initial"] == ranks[1]["initial"]
    moved = max(abs(a - b) for a, b in zip(ranks[0]["final"], ranks[0]["initial"]))
    assert moved > 1e-3, "training changed the parameters"
    # Gradients are all-reduced, so different shards still give the same update on both ranks.
    assert ranks[0]["final"] == pytest.approx(ranks[1]["final"], rel=1e-6, abs=1e-7)
