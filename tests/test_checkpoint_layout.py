"""What save_pretrained writes and what loading fills in: the original's key layout for every config, whichever way
the model was built, and the original's initialisation for every tensor a checkpoint lacks (issue 13, items 1-2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from caduceus_hf import CaduceusConfig, CaduceusForMaskedLM, CaduceusForSequenceClassification
from caduceus_hf.mixer import Mamba

from conftest import FIXTURES, perturb, tiny_config

# Each fixture directory is what the original's save_pretrained wrote for its config.
LAYOUTS = {
    "mlm_ph": (CaduceusForMaskedLM, FIXTURES / "mlm_ph"),
    "mlm_ps": (CaduceusForMaskedLM, FIXTURES / "mlm_ps"),
    "mlm_ps_nonfused": (CaduceusForMaskedLM, FIXTURES / "mlm_ps" / "nonfused_checkpoint"),
    "cls_ph": (CaduceusForSequenceClassification, FIXTURES / "cls_ph"),
    "cls_ps": (CaduceusForSequenceClassification, FIXTURES / "cls_ps"),
}


def original_keys(directory: Path) -> set[str]:
    return set(load_file(directory / "model.safetensors"))


def saved_keys(model, directory: Path) -> set[str]:
    model.save_pretrained(directory)
    return set(load_file(directory / "model.safetensors"))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_model_built_from_the_config_saves_the_original_layout(name, tmp_path):
    cls, directory = LAYOUTS[name]
    config = CaduceusConfig.from_pretrained(directory)
    assert saved_keys(cls(config), tmp_path) == original_keys(directory)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_loaded_model_saves_the_original_layout_of_its_config(name, tmp_path):
    cls, directory = LAYOUTS[name]
    assert saved_keys(cls.from_pretrained(directory), tmp_path) == original_keys(directory)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("source", ["mlm_ps", "mlm_ps_nonfused"])
def test_the_layout_follows_the_config_not_the_file_it_came_from(source, fused, tmp_path):
    """Loading the fused layout into a non-fused model and back: each saves what the original would for its config."""
    model = CaduceusForMaskedLM.from_pretrained(LAYOUTS[source][1], fused_add_norm=fused)
    expected = original_keys(LAYOUTS["mlm_ps" if fused else "mlm_ps_nonfused"][1])
    assert saved_keys(model, tmp_path) == expected


@pytest.mark.parametrize("name", ["mlm_ps", "mlm_ps_nonfused", "mlm_ph"])
def test_load_state_dict_reads_either_layout(name):
    """Trainer's resume calls load_state_dict on the saved file: every tensor must land, norms included."""
    directory = LAYOUTS[name][1]
    model = CaduceusForMaskedLM(CaduceusConfig.from_pretrained(directory))
    result = model.load_state_dict(load_file(directory / "model.safetensors"), strict=False)
    tied = {k for k in result.missing_keys if "lm_head" in k or "mamba_rev.in_proj" in k or "mamba_rev.out_proj" in k}
    assert set(result.missing_keys) == tied and not result.unexpected_keys
    reference = CaduceusForMaskedLM.from_pretrained(directory)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


ROLES = ("in_proj", "conv1d", "x_proj", "dt_proj", "out_proj", "A_log", "D")


def check_original_init(mamba: Mamba, role: str, config: CaduceusConfig) -> None:
    """The original's distribution for each tensor of a Mamba mixer (mamba-ssm's Mamba init + Caduceus')."""
    ssm, cfg = config.ssm_cfg, config.initializer_cfg
    if role in ("in_proj", "x_proj"):
        linear = getattr(mamba, role)
        bound = 1 / math.sqrt(linear.in_features)
        assert linear.weight.abs().max() <= bound and linear.weight.std() > bound / 4
    elif role == "conv1d":
        bound = 1 / math.sqrt(mamba.conv1d.weight.shape[-1])
        assert mamba.conv1d.weight.abs().max() <= bound and mamba.conv1d.bias.abs().max() <= bound
    elif role == "dt_proj":
        std = mamba.dt_rank**-0.5 * ssm["dt_scale"]
        assert mamba.dt_proj.weight.abs().max() <= std
        dt = torch.nn.functional.softplus(mamba.dt_proj.bias)
        assert dt.min() >= ssm["dt_init_floor"] * 0.999 and dt.max() <= ssm["dt_max"] * 1.001
    elif role == "out_proj":
        bound = 1 / math.sqrt(mamba.out_proj.in_features) / math.sqrt(cfg["n_residuals_per_layer"] * config.n_layer)
        assert mamba.out_proj.weight.abs().max() <= bound and mamba.out_proj.weight.std() > bound / 4
    elif role == "A_log":
        expected = torch.log(torch.arange(1, mamba.d_state + 1, dtype=torch.float32)).repeat(mamba.d_inner, 1)
        torch.testing.assert_close(mamba.A_log.detach(), expected)
    else:
        torch.testing.assert_close(mamba.D.detach(), torch.ones_like(mamba.D))


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("rcps", [False, True])
@pytest.mark.parametrize("role", ROLES)
def test_a_missing_mixer_tensor_gets_the_original_init(role, rcps, tie, tmp_path):
    config = tiny_config(rcps=rcps, bidirectional_weight_tie=tie, ssm_cfg={"d_state": 4, "bias": True})
    perturb(CaduceusForMaskedLM(config)).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    direction = "mamba_fwd" if role in ("in_proj", "out_proj") or tie else "mamba_rev"
    # caduceus.backbone.layers.0.mixer[.submodule].mamba_fwd.in_proj.weight -> ["mamba_fwd", "in_proj", "weight"]
    parts = {k: k.split(".mixer.")[-1].removeprefix("submodule.").split(".") for k in weights if ".layers.0.mixer." in k}
    dropped = {k for k, p in parts.items() if p[:2] == [direction, role]}
    assert dropped
    save_file({k: v for k, v in weights.items() if k not in dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    model, info = CaduceusForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert dropped <= set(info["missing_keys"])
    mixer = model.caduceus.backbone.layers[0].mixer
    mixer = mixer.submodule if rcps else mixer
    check_original_init(getattr(mixer, direction), role, config)
    for name, tensor in model.state_dict().items():
        assert torch.isfinite(tensor.float()).all(), name


def test_tied_weights_loaded_untied_get_the_original_init():
    """A published (tied) checkpoint loaded with bidirectional_weight_tie false: the reverse projections it lacks
    are initialised, not left as raw memory."""
    model, info = CaduceusForMaskedLM.from_pretrained(
        FIXTURES / "mlm_ph", bidirectional_weight_tie=False, output_loading_info=True
    )
    assert any("mamba_rev.in_proj" in k for k in info["missing_keys"])
    for layer in model.caduceus.backbone.layers:
        check_original_init(layer.mixer.mamba_rev, "in_proj", model.config)
        check_original_init(layer.mixer.mamba_rev, "out_proj", model.config)
