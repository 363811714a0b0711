"""The model card (README.md) written next to every converted checkpoint."""

from __future__ import annotations

from ..configuration_caduceus import CaduceusConfig

_PIPELINE = {
    "CaduceusForMaskedLM": "fill-mask",
    "CaduceusForSequenceClassification": "text-classification",
    "CaduceusForTokenClassification": "token-classification",
    "Caduceus": "feature-extraction",
}


def model_card(
    config: CaduceusConfig,
    architecture: str,
    num_parameters: int,
    source: str,
    base_model: str | None,
    license: str,
    max_abs_diff: float,
    dropped_keys: list[str],
) -> str:
    from .. import __version__

    variant = "Caduceus-PS (reverse-complement equivariant)" if config.rcps else "Caduceus-Ph"
    front = [
        "---",
        "library_name: transformers",
        f"license: {license}",
        f"pipeline_tag: {_PIPELINE.get(architecture, 'feature-extraction')}",
        "tags:",
        "- genomics",
        "- dna",
        "- caduceus",
        "- caduceus-hf",
        "- mamba",
    ]
    if base_model:
        front += ["base_model:", f"- {base_model}"]
    front.append("---")
    dropped = ", ".join(f"`{k}`" for k in dropped_keys) if dropped_keys else "none"
    body = f"""
# {variant}, {config.n_layer} layers, d_model {config.d_model}

A Caduceus DNA language model (Schiff et al. 2024, arXiv:2403.03234) in the native layout of
[caduceus-hf](https://pypi.org/project/caduceus-hf/): it loads with `AutoModelForMaskedLM` / `AutoModel` after
`import caduceus_hf`, on CPU, MPS or CUDA, without `trust_remote_code`.

```python
import caduceus_hf  # registers the "caduceus" model type
from transformers import AutoModelForMaskedLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("<this repo>")
model = AutoModelForMaskedLM.from_pretrained("<this repo>")
```

## Model

| | |
|---|---|
| architecture | `{architecture}` |
| parameters | {num_parameters:,} |
| layers / d_model / d_state | {config.n_layer} / {config.d_model} / {config.ssm_cfg["d_state"]} |
| bidirectional | {config.bidirectional} ({config.bidirectional_strategy}, weight tie {config.bidirectional_weight_tie}) |
| RCPS | {config.rcps} |
| fused_add_norm semantics | {config.fused_add_norm} |
| vocabulary | 12 DNA character tokens, padded to {config.vocab_size} |

## Conversion

- source: `{source}`
- converted with caduceus-hf {__version__}; non-model entries dropped: {dropped}
- verified: the written files, reloaded through the Auto class, reproduce the source model's outputs on a probe
  sequence (max abs difference {max_abs_diff:.3g}).
"""
    return "\n".join(front) + "\n" + body
