"""config_common_kwargs for transformers' ConfigTester: every keyword of PretrainedConfig.__init__ (transformers 5:
architectures, output_hidden_states, return_dict, dtype, chunk_size_feed_forward, is_encoder_decoder, id2label,
label2id, problem_type) with a value other than its default, so that a config class that drops one is caught.
transformers_version is left out (the config overwrites it). Installed as hf_tests/utils/test_configuration_utils.py.
"""

config_common_kwargs = {
    "architectures": ["CommonKwargsModel"],
    "output_hidden_states": True,
    "return_dict": False,
    "dtype": "float16",
    "chunk_size_feed_forward": 4,
    "is_encoder_decoder": True,
    "id2label": {0: "first", 1: "second", 2: "third"},
    "label2id": {"first": 0, "second": 1, "third": 2},
    "problem_type": "multi_label_classification",
}
