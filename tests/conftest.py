"""Shared test helpers: fixture paths, tiny configs, the optional external data directory (CADUCEUS_DATA_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never touch the network or the user's Hub cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

FIXTURES = Path(__file__).parent / "fixtures"
# Real genomes and variant sets that are not in the repository (benchmarks/data_dir.py reads the same variable);
# without it, ../shared/data beside the repository when present; tests that need it skip otherwise.
DATA_DIR_ENV = "CADUCEUS_DATA_DIR"
SHARED_DATA = (
    Path(os.environ[DATA_DIR_ENV]).expanduser() if os.environ.get(DATA_DIR_ENV)
    else Path(__file__).resolve().parents[2] / "shared" / "data"
)


def tiny_config(**overrides):
    from caduceus_hf import CaduceusConfig

    kwargs = dict(d_model=16, n_layer=2, vocab_size=12, ssm_cfg={"d_state": 4})
    kwargs.update(overrides)
    return CaduceusConfig(**kwargs)


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Move every parameter off its init value (norm weights at 1, D at 1 and zero biases would hide bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def save_tiny_mlm(path: Path, seed: int = 0, **overrides) -> Path:
    """A perturbed tiny CaduceusForMaskedLM (weights drawn after torch.manual_seed(seed)) saved to `path` with the
    default tokenizer, as the apps load a model directory."""
    from caduceus_hf import CaduceusForMaskedLM, CaduceusTokenizer

    torch.manual_seed(seed)
    perturb(CaduceusForMaskedLM(tiny_config(**overrides)).eval(), scale=0.3).save_pretrained(path)
    CaduceusTokenizer().save_pretrained(path)
    return path


def on_backend(model, name: str):
    """`model` with its mixers on scan backend `name` (`set_scan_backend`)."""
    model.set_scan_backend(name)
    return model


def random_ids(batch: int, length: int, seed: int = 0, low: int = 7, high: int = 12) -> torch.Tensor:
    return torch.randint(low, high, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"external data directory {SHARED_DATA} not present (set {DATA_DIR_ENV})")
    return SHARED_DATA


def pytest_collection_modifyitems(config, items):
    """`slow` tests run only when selected (-m slow), as pyproject.toml declares."""
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
