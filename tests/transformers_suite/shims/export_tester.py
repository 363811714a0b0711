"""ExportTesterMixin for transformers' ModelTesterMixin: torch.export of every model class of the tester, with static
and with dynamic batch and length, outputs compared with eager. Installed as hf_tests/exporters/test_export.py."""

from __future__ import annotations

import torch


class ExportTesterMixin:
    test_torch_exportable = True
    export_max_length = 4096  # the dynamic length's upper bound (a model may switch paths beyond it)

    def _dynamic_export_model(self, model):
        """The model as dynamic-shape export should see it (a tester may choose an implementation here)."""
        return model

    def _export_inputs(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        return config, tensors

    def _check_exported(self, model, exported, inputs):
        with torch.no_grad():
            expected = model(**inputs).to_tuple()
            got = exported(**inputs)
        got = tuple(got.values()) if hasattr(got, "values") else tuple(got)
        self.assertEqual(len(got), len(expected))
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    def test_torch_export_static_shapes(self):
        """Static shapes, once (the first model class): each head's export is checked with dynamic shapes below, at
        the example shape too."""
        if not self.test_torch_exportable:
            self.skipTest("model not exportable")
        config, inputs = self._export_inputs()
        model = self.all_model_classes[0](config).eval()
        exported = torch.export.export(model, (), inputs).module()
        self._check_exported(model, exported, inputs)

    def test_torch_export_dynamic_shapes(self):
        if not self.test_torch_exportable:
            self.skipTest("model not exportable")
        config, inputs = self._export_inputs()
        batch = torch.export.Dim("batch")
        length = torch.export.Dim("length", max=self.export_max_length)
        dims = {k: {0: batch, 1: length} for k in inputs}
        # Another batch size and length: the inputs cut or repeated along both axes.
        other = {k: torch.cat([v, v[:1]])[:, : max(2, v.shape[1] - 3)] for k, v in inputs.items()}
        for model_class in self.all_model_classes:
            with self.subTest(model_class.__name__):
                model = self._dynamic_export_model(model_class(config).eval())
                exported = torch.export.export(model, (), inputs, dynamic_shapes=dims).module()
                self._check_exported(model, exported, inputs)
                self._check_exported(model, exported, other)
