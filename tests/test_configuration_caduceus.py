"""CaduceusConfig: the published keys, normalisation, validation."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig

from caduceus_hf import CaduceusConfig
from caduceus_hf.dna import DNA_COMPLEMENT_MAP

from conftest import FIXTURES


def test_published_config_loads_with_every_key():
    raw = json.loads((FIXTURES / "mlm_ps" / "config.json").read_text())
    config = AutoConfig.from_pretrained(FIXTURES / "mlm_ps")
    assert isinstance(config, CaduceusConfig)
    assert config.vocab_size == 16 and config.rcps and config.fused_add_norm
    assert config.complement_map == {int(k): v for k, v in raw["complement_map"].items()}
    assert config.auto_map == raw["auto_map"]
    assert config.ssm_cfg["use_fast_path"] is True and config.ssm_cfg["dt_rank"] == "auto"
    assert config.initializer_cfg == raw["initializer_cfg"]


def test_vocab_padding_and_complement_map_extension():
    config = CaduceusConfig(vocab_size=12, complement_map={str(k): v for k, v in DNA_COMPLEMENT_MAP.items()})
    assert config.vocab_size == 16
    assert list(config.complement_map) == list(range(16))
    assert all(isinstance(k, int) for k in config.complement_map)
    assert config.complement_map[7] == 10 and config.complement_map[13] == 13
    assert CaduceusConfig(vocab_size=13, pad_vocab_size_multiple=4).vocab_size == 16


def test_defaults_match_the_tokenizer_and_tie_embeddings():
    config = CaduceusConfig()
    assert config.tie_word_embeddings is True
    assert (config.pad_token_id, config.bos_token_id, config.eos_token_id, config.mask_token_id) == (4, 2, 1, 3)
    assert config.complement_map[8] == 9


def test_round_trip_through_json(tmp_path):
    config = CaduceusConfig(d_model=32, n_layer=3, rcps=True, pooling_strategy="last", conjoin_train=True,
                            ssm_cfg={"d_state": 8, "dt_rank": 4})
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["pooling_strategy"] == "last" and saved["conjoin_train"] is True
    reloaded = CaduceusConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.dt_rank == 4 and reloaded.d_inner == 64 and reloaded.hidden_size == 64


def test_dt_rank_auto():
    assert CaduceusConfig(d_model=118).dt_rank == 8
    assert CaduceusConfig(d_model=256).dt_rank == 16


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(rcps=True, complement_map=None), "complement_map"),
        (dict(bidirectional_strategy="concat"), "bidirectional_strategy"),
        (dict(complement_map={7: 10, 10: 8, 8: 7}), "complement_map"),
        (dict(complement_map={7: 99}), "complement_map"),
        (dict(ssm_cfg={"d_stat": 16}), "ssm_cfg"),
        (dict(ssm_cfg={"dt_rank": 0}), "dt_rank"),
        (dict(pooling_strategy="median"), "pooling_strategy"),
        (dict(d_model=0), "d_model"),
    ],
)
def test_invalid_configs_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        CaduceusConfig(**kwargs)


@pytest.mark.parametrize("value", ["cuda", "gpu"])
def test_a_legacy_scan_backend_key_is_dropped_with_an_info_line(caplog, value):
    """The backend is chosen at run time now (caduceus_hf.backends); old config.json files carry the key."""
    with caplog.at_level("INFO", logger="caduceus_hf.configuration_caduceus"):
        config = CaduceusConfig(scan_backend=value)
    assert "scan_backend" not in config.to_dict() and not hasattr(config, "scan_backend")
    (record,) = caplog.records
    assert f"ignoring scan_backend={value!r}" in record.getMessage()


def test_ph_needs_no_complement_map():
    assert CaduceusConfig(rcps=False, complement_map=None).complement_map is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(norm_epsilon=0), "norm_epsilon must be a positive number"),
        (dict(norm_epsilon=-1e-5), "norm_epsilon must be a positive number"),
        (dict(norm_epsilon="1e-5"), "norm_epsilon must be a positive number"),
        (dict(ssm_cfg={"dt_min": 0.2, "dt_max": 0.1}), r"dt_min \(0.2\) is larger than dt_max \(0.1\)"),
        (dict(ssm_cfg={"dt_min": 0}), r"ssm_cfg\['dt_min'\] must be a positive number"),
        (dict(ssm_cfg={"dt_init_floor": -1}), r"ssm_cfg\['dt_init_floor'\] must be a positive number"),
        (dict(ssm_cfg={"bias": "no"}), r"ssm_cfg\['bias'\] must be true or false"),
        (dict(num_labels=0), "num_labels must be a positive integer, got 0"),
        (dict(classifier_dropout=1.0), r"classifier_dropout must be in \[0, 1\)"),
        (dict(initializer_cfg={"initializer_range": 0}), "initializer_range'] must be positive"),
        (dict(initializer_cfg={"n_residuals_per_layer": 0}), "n_residuals_per_layer'] must be a positive integer"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CaduceusConfig(**kwargs)
