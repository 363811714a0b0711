"""transformers' common model and config tests (ModelTesterMixin, ConfigTester) run against Caduceus, Ph and PS.

The mixins come from the transformers sdist of the installed version (see conftest.py); only the tester classes are
ours. Inputs are the suite's standard ones: random ids and `random_attention_mask` (random 0/1 masks, so real tokens
with gaps), plus one batch row with a gapped mask of our own. Tests that cannot apply to this model are listed, with
the reason, in NOT_APPLICABLE; everything else must pass.
"""

from __future__ import annotations

import unittest

import pytest
import torch

from caduceus_hf import (
    Caduceus,
    CaduceusConfig,
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusForTokenClassification,
)

common = pytest.importorskip("hf_tests.test_modeling_common")
config_common = pytest.importorskip("hf_tests.test_configuration_common")

# Test name (or "TesterClass.test_name" for one variant) -> why it does not apply to Caduceus. Everything else runs.
NOT_APPLICABLE: dict[str, str] = {
    "test_reverse_loading_mapping": (
        "the registered conversion reads the original's non-fused PS norm names (`norm.submodule.`) into our modules; "
        "saving writes the original's layout for the model's own config, which for Ph and fused PS (these testers) is "
        "`norm.weight`, so that "
        "conversion is deliberately not reversed (tests/test_checkpoint_layout.py checks the saved keys of every "
        "fixture config)"
    ),
    "CaduceusPsModelTest.test_model_get_set_embeddings": (
        "a PS input embedding is the two-strand RCPSEmbedding (an nn.Embedding giving 2 * d_model channels, what "
        "forward takes as inputs_embeds); set_input_embeddings(nn.Embedding) adopts that module as its shared weight, "
        "so get_input_embeddings() returns the RCPSEmbedding around it rather than the object set"
    ),
}


class CaduceusModelTester:
    """Tiny Caduceus configs and inputs in the shape ModelTesterMixin expects."""

    def __init__(self, parent, rcps: bool, batch_size: int = 3, seq_length: int = 9, num_labels: int = 3) -> None:
        self.parent = parent
        self.rcps = rcps
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.num_labels = num_labels
        self.vocab_size = 16
        self.d_model = 8
        self.num_hidden_layers = 2
        self.hidden_size = 2 * self.d_model if rcps else self.d_model
        self.is_training = True

    def get_config(self) -> CaduceusConfig:
        return CaduceusConfig(
            d_model=self.d_model,
            n_layer=self.num_hidden_layers,
            vocab_size=self.vocab_size,
            ssm_cfg={"d_state": 4, "expand": 2},
            rcps=self.rcps,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs(self) -> tuple[CaduceusConfig, torch.Tensor, torch.Tensor]:
        input_ids = common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = common.random_attention_mask([self.batch_size, self.seq_length])
        # One row with gaps of our own choosing: real, gap, real, two gaps, real ..., whatever the random mask drew.
        attention_mask[-1] = torch.tensor([1, 0, 1, 0, 0, 1, 1, 0, 1][: self.seq_length])
        return self.get_config(), input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self) -> tuple[CaduceusConfig, dict[str, torch.Tensor]]:
        config, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask}


class _CaduceusSuite(common.ModelTesterMixin):
    all_model_classes = (
        Caduceus,
        CaduceusForMaskedLM,
        CaduceusForSequenceClassification,
        CaduceusForTokenClassification,
    )
    has_attentions = False
    rcps = False

    @classmethod
    def setUpClass(cls) -> None:
        """The suite recognises base models (no loss to train) by name in transformers' own MODEL_MAPPING_NAMES,
        where an installed package cannot register; the suite module's copy gets our entry for these tests."""
        super().setUpClass()
        cls._mapping_names = common.MODEL_MAPPING_NAMES
        common.MODEL_MAPPING_NAMES = {**cls._mapping_names, CaduceusConfig.model_type: Caduceus.__name__}

    @classmethod
    def tearDownClass(cls) -> None:
        common.MODEL_MAPPING_NAMES = cls._mapping_names
        super().tearDownClass()

    def setUp(self) -> None:
        for key in (self._testMethodName, f"{type(self).__name__}.{self._testMethodName}"):
            if key in NOT_APPLICABLE:
                self.skipTest(NOT_APPLICABLE[key])
        self.model_tester = CaduceusModelTester(self, rcps=self.rcps)
        self.config_tester = config_common.ConfigTester(
            self,
            config_class=CaduceusConfig,
            common_properties=["hidden_size", "num_hidden_layers"],
            d_model=8,
            n_layer=2,
            rcps=self.rcps,
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        """The suite makes labels only for transformers' own classes (by name); ours get theirs here."""
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            tester = self.model_tester
            shape = (tester.batch_size, tester.seq_length)
            if model_class is CaduceusForMaskedLM:
                inputs_dict["labels"] = torch.zeros(shape, dtype=torch.long)
            elif model_class is CaduceusForTokenClassification:
                inputs_dict["labels"] = torch.zeros(shape, dtype=torch.long)
            elif model_class is CaduceusForSequenceClassification:
                inputs_dict["labels"] = torch.zeros(tester.batch_size, dtype=torch.long)
        return inputs_dict

    def _dynamic_export_model(self, model):
        # The numba custom ops specialise the length to their 64-step checkpoint chunk when traced; a length that
        # stays symbolic needs the reference scan, which export traces as one scan operator.
        model.set_scan_backend("reference")
        return model

    def test_config(self) -> None:
        self.config_tester.run_common_tests()


class CaduceusPhModelTest(_CaduceusSuite, unittest.TestCase):
    rcps = False


class CaduceusPsModelTest(_CaduceusSuite, unittest.TestCase):
    rcps = True
