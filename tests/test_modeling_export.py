"""torch.export and torch.compile(fullgraph=True) of every head, Ph and PS: one graph, outputs equal to eager.

The models use the plain PyTorch scan ("reference"), which export traces as one scan operator so that batch and
length stay dynamic. Each forward runs with a gapped attention mask, which exercises the real-token packing too.
"""

from __future__ import annotations

import pytest
import torch

from caduceus_hf import (
    Caduceus,
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusForTokenClassification,
)

from conftest import perturb, random_ids, tiny_config

HEADS = [Caduceus, CaduceusForMaskedLM, CaduceusForSequenceClassification, CaduceusForTokenClassification]
# The chunked long-sequence path (mixer.STREAM_CHUNK steps and more, without autograd) is outside these graphs.
MAX_LENGTH = 4096


def _model(head, rcps: bool):
    model = head(tiny_config(n_layer=1, rcps=rcps, num_labels=3))
    model.set_scan_backend("reference")
    return perturb(model, seed=40).eval()


def _batch(batch: int, length: int, seed: int) -> dict[str, torch.Tensor]:
    ids = random_ids(batch, length, seed=seed, low=0)
    mask = (torch.rand(batch, length, generator=torch.Generator().manual_seed(seed)) > 0.3).long()
    mask[:, 0] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _outputs(output) -> tuple[torch.Tensor, ...]:
    return tuple(t for t in output.values()) if hasattr(output, "values") else tuple(output)


# Every head once, Ph or PS (transformers' common suite, tests/transformers_suite, exports all eight in CI).
@pytest.mark.parametrize(
    "head, rcps",
    [(Caduceus, False), (CaduceusForMaskedLM, True), (CaduceusForSequenceClassification, False),
     (CaduceusForTokenClassification, True)],
    ids=lambda p: getattr(p, "__name__", "ps" if p else "ph"),
)
def test_export_with_dynamic_batch_and_length(head, rcps):
    model = _model(head, rcps)
    example = _batch(2, 10, seed=41)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=MAX_LENGTH)
    dims = {"input_ids": {0: batch, 1: length}, "attention_mask": {0: batch, 1: length}}
    exported = torch.export.export(model, (), example, dynamic_shapes=dims).module()
    with torch.no_grad():
        for inputs in (example, _batch(3, 17, seed=42), _batch(1, 5, seed=43)):
            got, expected = _outputs(exported(**inputs)), _outputs(model(**inputs))
            assert len(got) == len(expected)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_export_with_static_shapes_and_labels():
    model = _model(CaduceusForMaskedLM, rcps=True)
    inputs = _batch(2, 9, seed=44)
    inputs["labels"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    exported = torch.export.export(model, (), inputs).module()
    got, expected = exported(**inputs), model(**inputs)
    torch.testing.assert_close(got["loss"], expected.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["logits"], expected.logits, rtol=1e-5, atol=1e-5)


def _with_labels(head, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    labels = {
        CaduceusForMaskedLM: inputs["input_ids"],
        CaduceusForSequenceClassification: torch.arange(inputs["input_ids"].shape[0]) % 3,
        CaduceusForTokenClassification: inputs["input_ids"] % 3,
    }
    return {**inputs, "labels": labels[head]} if head in labels else inputs


@pytest.mark.parametrize("rcps", [False, True], ids=["ph", "ps"])
@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_compile_fullgraph(head, rcps):
    """No graph break (fullgraph=True raises on one) in training mode, with labels and hidden states."""
    torch._dynamo.reset()
    model = _model(head, rcps).train()
    inputs = _with_labels(head, _batch(2, 8, seed=45))
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    got = compiled(**inputs, output_hidden_states=True)
    expected = model(**inputs, output_hidden_states=True)
    torch.testing.assert_close(_outputs(got), _outputs(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head, rcps", [(CaduceusForMaskedLM, True), (CaduceusForSequenceClassification, False)])
def test_compiled_gradients_equal_eager(head, rcps):
    """Through AOTAutograd: the compiled backward gives eager's gradients."""
    torch._dynamo.reset()
    model = _model(head, rcps).train()
    inputs = _with_labels(head, _batch(2, 8, seed=46))
    torch.compile(model, fullgraph=True, backend="aot_eager")(**inputs).loss.backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(**inputs).loss.backward()
    torch.testing.assert_close(compiled_grads, [p.grad for p in model.parameters()], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compile_with_inductor():
    """The default backend, once: the generated CPU code agrees with eager."""
    torch._dynamo.reset()
    model = _model(CaduceusForSequenceClassification, rcps=True)
    inputs = _batch(2, 8, seed=46)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs).logits, model(**inputs).logits, rtol=1e-5, atol=1e-5)
