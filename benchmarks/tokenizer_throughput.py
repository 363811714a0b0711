"""Tokenizer throughput: CaduceusTokenizer (Rust `tokenizers` backend) against the original tokenizer's algorithm.

Workloads: one 131,072-base sequence, and a batch of 256 sequences of 1,000 bases. Sequences are random A C G T
with a few N, half of them in soft-masked (lower-case) blocks of 1,000 bases, as in a soft-masked reference genome.

Measured in the same run, each the median of --repeats timed calls after one warm-up call:

* baseline (python): the original slow tokenizer's algorithm written as plain Python, the cheapest form of it:
  upper-case, list(text), per-character vocabulary lookup with [UNK] fallback, append [SEP]; returns lists of ids.
* baseline (PythonBackend): the same algorithm inside transformers' slow-tokenizer machinery (special-token trie,
  one method call per character), which is how the published tokenizer runs.
* CaduceusTokenizer: `tok(text)` returning lists, and `tok(..., return_tensors="pt")` (padded for the batch); both
  take the class's lookup path (ASCII text without "[").
* CaduceusTokenizer + offsets: `tok(..., return_offsets_mapping=True)`, which goes through the Rust pipeline.
* plain TokenizersBackend: transformers' generic class on the same tokenizer.json, as users without this package
  load it (`TokenizersBackend(tokenizer_object=...)` is what `from_pretrained` builds from the file).
* rust backend only: `tok.backend_tokenizer.encode[_batch]`, the bare Rust call.

Ratios: "vs slow" against baseline (PythonBackend), the original tokenizer's speed (acceptance: >= 2x for
CaduceusTokenizer on both workloads); "vs python" against the bare Python loop.

Peak memory: each workload and method runs once more in a fresh spawned process, whose peak resident set size is
reset just before the call (Linux /proc/self/clear_refs); reported is the peak during the call minus the resident size
before it, so Rust allocations count too and the returned ids are included. "-" where the peak cannot be reset.

Every method's ids are checked equal before timing. Run: `python benchmarks/tokenizer_throughput.py [--repeats 7]`.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import tokenizers
import torch
import transformers
from transformers import TokenizersBackend
from transformers.tokenization_python import PythonBackend

from caduceus_hf import CaduceusTokenizer
from caduceus_hf.dna import VOCAB

LONG_LENGTH = 131_072
BATCH_SIZE, BATCH_LENGTH = 256, 1_000
SOFT_MASK_BLOCK = 1_000
UNK, SEP = VOCAB["[UNK]"], VOCAB["[SEP]"]


def dna(length: int, rng: random.Random) -> str:
    bases = rng.choices("ACGTN", weights=[0.2475, 0.2475, 0.2475, 0.2475, 0.01], k=length)
    blocks = ["".join(bases[i : i + SOFT_MASK_BLOCK]) for i in range(0, length, SOFT_MASK_BLOCK)]
    return "".join(block.lower() if i % 2 else block for i, block in enumerate(blocks))


def workloads() -> dict[str, list[str]]:
    rng = random.Random(0)
    return {
        f"1 x {LONG_LENGTH:,} bases": [dna(LONG_LENGTH, rng)],
        f"{BATCH_SIZE} x {BATCH_LENGTH:,} bases": [dna(BATCH_LENGTH, rng) for _ in range(BATCH_SIZE)],
    }


def original_algorithm(text: str) -> list[int]:
    ids = [VOCAB.get(char, UNK) for char in list(text.upper())]
    ids.append(SEP)
    return ids


class SlowCaduceusTokenizer(PythonBackend):
    """The original tokenizer's algorithm on transformers' Python tokenizer base class (benchmark baseline only)."""

    model_input_names = ["input_ids"]

    def __init__(self, **kwargs: Any) -> None:
        self._vocab = dict(VOCAB)
        self._ids_to_tokens = {i: t for t, i in VOCAB.items()}
        special = dict(bos_token="[BOS]", eos_token="[SEP]", sep_token="[SEP]", cls_token="[CLS]", pad_token="[PAD]")
        super().__init__(**special, mask_token="[MASK]", unk_token="[UNK]", model_max_length=LONG_LENGTH + 1, **kwargs)

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return list(text.upper())

    def _convert_token_to_id(self, token: str) -> int:
        return self._vocab.get(token, UNK)

    def _convert_id_to_token(self, index: int) -> str:
        return self._ids_to_tokens[index]

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        return token_ids_0 + [SEP] if token_ids_1 is None else token_ids_0 + [SEP] + token_ids_1 + [SEP]


def plain_transformers(fast: CaduceusTokenizer) -> TokenizersBackend:
    """transformers' generic class on CaduceusTokenizer's tokenizer.json, with the saved special tokens."""
    return TokenizersBackend(tokenizer_object=fast.backend_tokenizer, **fast.special_tokens_map, padding_side="left")


def methods(texts: list[str]) -> dict[str, Callable[[], Any]]:
    fast = CaduceusTokenizer(model_max_length=LONG_LENGTH + 1)
    slow = SlowCaduceusTokenizer()
    plain = plain_transformers(fast)
    backend = fast.backend_tokenizer
    if len(texts) == 1:
        (text,) = texts
        return {
            "baseline (python)": lambda: original_algorithm(text),
            "baseline (PythonBackend)": lambda: slow(text),
            "CaduceusTokenizer -> lists": lambda: fast(text),
            "CaduceusTokenizer -> pt": lambda: fast(text, return_tensors="pt"),
            "CaduceusTokenizer + offsets": lambda: fast(text, return_offsets_mapping=True),
            "plain TokenizersBackend": lambda: plain(text),
            "rust backend only": lambda: backend.encode(text),
        }
    return {
        "baseline (python)": lambda: [original_algorithm(t) for t in texts],
        "baseline (PythonBackend)": lambda: slow(texts),
        "CaduceusTokenizer -> lists": lambda: fast(texts),
        "CaduceusTokenizer -> pt": lambda: fast(texts, padding=True, return_tensors="pt"),
        "CaduceusTokenizer + offsets": lambda: fast(texts, return_offsets_mapping=True),
        "plain TokenizersBackend": lambda: plain(texts),
        "rust backend only": lambda: backend.encode_batch(texts),
    }


def check_identical_ids(texts: list[str]) -> None:
    expected = [original_algorithm(t) for t in texts]
    fast = CaduceusTokenizer(model_max_length=LONG_LENGTH + 1)
    tensors = fast(texts, padding=True, return_tensors="pt")
    got = {
        "CaduceusTokenizer": fast(texts)["input_ids"],
        "CaduceusTokenizer -> pt": [row[mask.bool()].tolist() for row, mask in zip(*tensors.values(), strict=True)],
        "CaduceusTokenizer + offsets": fast(texts, return_offsets_mapping=True)["input_ids"],
        "PythonBackend": SlowCaduceusTokenizer()(texts)["input_ids"],
        "plain TokenizersBackend": plain_transformers(fast)(texts)["input_ids"],
        "rust backend": [e.ids for e in fast.backend_tokenizer.encode_batch(texts)],
    }
    for name, ids in got.items():
        if ids != expected:
            raise AssertionError(f"{name} ids differ from the original algorithm")


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _memory_status_kib() -> dict[str, int]:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def _peak_memory_child(workload: str, method: str, queue: multiprocessing.Queue) -> None:
    fn = methods(workloads()[workload])[method]
    gc.collect()
    try:
        # Reset the peak (VmHWM) to the current resident size, so the peak below is that of the call alone.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        queue.put(None)
        return
    before = _memory_status_kib()["VmRSS"]
    result = fn()
    queue.put((_memory_status_kib()["VmHWM"] - before) * 1024)
    del result


def peak_memory_mib(workload: str, method: str) -> float | None:
    """Peak resident memory added by one call, in a fresh process (Linux only; None where the peak cannot be reset)."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_child, args=(workload, method, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return None if value is None else value / 2**20


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per method (median reported)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    args = parser.parse_args()

    print(f"CPU: {cpu_model()}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, {os.cpu_count()} CPUs, "
        f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')}, repeats={args.repeats}"
    )
    for workload, texts in workloads().items():
        check_identical_ids(texts)
        n_tokens = sum(len(t) + 1 for t in texts)
        timings = {name: median_seconds(fn, args.repeats) for name, fn in methods(texts).items()}
        python, slow = timings["baseline (python)"], timings["baseline (PythonBackend)"]
        print(f"\n{workload} ({n_tokens:,} tokens with [SEP]; ids identical across methods)")
        print(f"  {'method':<30}{'median ms':>11}{'Mtokens/s':>11}{'vs slow':>9}{'vs python':>11}{'peak MiB':>10}")
        for name, seconds in timings.items():
            peak = None if args.no_memory else peak_memory_mib(workload, name)
            memory = "-" if peak is None else f"{peak:.1f}"
            print(
                f"  {name:<30}{seconds * 1e3:>11.2f}{n_tokens / seconds / 1e6:>11.2f}"
                f"{slow / seconds:>8.1f}x{python / seconds:>10.2f}x{memory:>10}"
            )
        ratio = slow / timings["CaduceusTokenizer -> lists"]
        print(f"  CaduceusTokenizer -> lists vs the original's slow tokenizer: {ratio:.1f}x (acceptance >= 2x)")


if __name__ == "__main__":
    main()
