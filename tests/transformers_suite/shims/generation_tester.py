"""GenerationTesterMixin for transformers' ModelTesterMixin: empty, for models that do not generate (Caduceus is a
bidirectional encoder). Installed as hf_tests/generation/test_utils.py."""


class GenerationTesterMixin:
    pass
