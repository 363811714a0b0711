"""The models against the original's golden outputs, and the behaviour the original lacked."""

from __future__ import annotations

import copy
import itertools
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

import caduceus_hf
from caduceus_hf import (
    Caduceus,
    CaduceusConfig,
    CaduceusForMaskedLM,
    CaduceusForSequenceClassification,
    CaduceusForTokenClassification,
)
from caduceus_hf.dna import DNA_COMPLEMENT_MAP, reverse_complement_ids

from conftest import FIXTURES, on_backend, perturb, random_ids, tiny_config
import original_semantics

CLOSE = dict(rtol=1e-4, atol=1e-5)
BACKENDS = ["reference", "auto"]
MODES = {"fused": True, "nonfused": False}


def load_mlm(name, fused=True, backend="auto", path=None):
    return AutoModelForMaskedLM.from_pretrained(
        path or FIXTURES / name, fused_add_norm=fused, scan_backend=backend
    ).eval()


# --- golden outputs ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps"])
def test_mlm_fixtures(name, mode, backend):
    inputs = load_file(FIXTURES / name / "inputs.safetensors")
    expected = load_file(FIXTURES / name / f"expected_{mode}.safetensors")
    model = load_mlm(name, MODES[mode], backend)
    with torch.no_grad():
        out_a = model(inputs["input_ids_a"])
        out_b = model(inputs["input_ids_b"])
        base = model.caduceus(inputs["input_ids_a"])
    torch.testing.assert_close(out_a.logits, expected["mlm_logits_a"], **CLOSE)
    torch.testing.assert_close(out_b.logits, expected["mlm_logits_b"], **CLOSE)
    torch.testing.assert_close(base.last_hidden_state, expected["last_hidden_state_a"], **CLOSE)


@pytest.mark.parametrize("mode", MODES)
def test_original_nonfused_layout_loads_in_both_modes(mode):
    """mlm_ps/nonfused_checkpoint names its norms `.norm.submodule.weight`; same weights as mlm_ps."""
    inputs = load_file(FIXTURES / "mlm_ps" / "inputs.safetensors")
    expected = load_file(FIXTURES / "mlm_ps" / f"expected_{mode}.safetensors")
    model, info = AutoModelForMaskedLM.from_pretrained(
        FIXTURES / "mlm_ps" / "nonfused_checkpoint", fused_add_norm=MODES[mode], output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(inputs["input_ids_a"]).logits, expected["mlm_logits_a"], **CLOSE)


@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps", "cls_ph", "cls_ps"])
def test_published_files_load_without_missing_or_unexpected_keys(name):
    auto = AutoModelForSequenceClassification if name.startswith("cls") else AutoModelForMaskedLM
    _, info = auto.from_pretrained(FIXTURES / name, output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps"])
def test_hidden_states_convention(name, mode):
    """n_layer + 1 entries: the embedding output (the original's entry 0), the residual stream after each block but the
    last, the final state. The original instead lists the blocks' mixer outputs; for Ph the residual stream is their
    running sum, which ties the two conventions together."""
    inputs = load_file(FIXTURES / name / "inputs.safetensors")["input_ids_a"]
    expected = load_file(FIXTURES / name / f"expected_{mode}.safetensors")
    model = load_mlm(name, MODES[mode])
    with torch.no_grad():
        out = model.caduceus(inputs, output_hidden_states=True)
    n_layer = model.config.n_layer
    assert isinstance(out.hidden_states, tuple) and len(out.hidden_states) == n_layer + 1
    torch.testing.assert_close(out.hidden_states[0], expected["hidden_states_a.0"], **CLOSE)
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    if name == "mlm_ph":
        running = expected["hidden_states_a.0"]
        for i in range(1, n_layer):
            running = running + expected[f"hidden_states_a.{i}"]
            torch.testing.assert_close(out.hidden_states[i], running, **CLOSE)


def test_masked_lm_loss_uses_minus_100():
    for name in ("mlm_ph", "mlm_ps"):
        labels = load_file(FIXTURES / name / "labels.safetensors")
        expected = load_file(FIXTURES / name / "expected_loss.safetensors")
        ids = load_file(FIXTURES / name / "inputs.safetensors")["input_ids_a"]
        # The original marks non-targets with [PAD] (4) and ignores the pad id; -100 is the HF convention.
        hf_labels = labels["labels_a"].masked_fill(labels["labels_a"] == 4, -100)
        weights = labels["loss_weights_a"].clone()
        for mode, fused in MODES.items():
            model = load_mlm(name, fused)
            with torch.no_grad():
                loss = model(ids, labels=hf_labels).loss
                weighted = model(ids, labels=hf_labels, loss_weights=weights).loss
            torch.testing.assert_close(loss, expected[f"loss_{mode}"][0], **CLOSE)
            torch.testing.assert_close(weighted, expected[f"weighted_loss_{mode}"][0], **CLOSE)
        assert torch.equal(weights, labels["loss_weights_a"]), "the caller's loss_weights were modified"


def test_loss_all_ignored_is_zero_and_num_items_in_batch():
    model = perturb(CaduceusForMaskedLM(tiny_config()))
    ids = random_ids(2, 12)
    out = model(ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    labels = ids.clone()
    labels[:, ::2] = -100
    mean_loss = model(ids, labels=labels).loss
    summed = model(ids, labels=labels, num_items_in_batch=2 * labels.ne(-100).sum()).loss
    torch.testing.assert_close(summed, mean_loss / 2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["cls_ph", "cls_ps"])
def test_sequence_classification_fixtures(name, mode):
    inputs = load_file(FIXTURES / name / "inputs.safetensors")
    expected = load_file(FIXTURES / name / f"expected_{mode}.safetensors")
    intended = load_file(FIXTURES / name / f"expected_{mode}_intended_first_last.safetensors")
    combos = ["mean", "max", "first", "last"] + (["conjoin_mean", "conjoin_max"] if name == "cls_ph" else [])
    for combo in combos:
        pooling = combo.removeprefix("conjoin_")
        model = AutoModelForSequenceClassification.from_pretrained(
            FIXTURES / name, fused_add_norm=MODES[mode], pooling_strategy=pooling, conjoin_eval=combo != pooling
        ).eval()
        reference = expected if f"logits_a.{combo}" in expected else intended
        for part in ("a", "b"):
            ids = inputs[f"input_ids_{part}_conjoin"] if combo != pooling else inputs[f"input_ids_{part}"]
            with torch.no_grad():
                out = model(ids, labels=inputs[f"labels_{part}"])
            torch.testing.assert_close(out.logits, reference[f"logits_{part}.{combo}"], **CLOSE)
            torch.testing.assert_close(out.loss.reshape(1), reference[f"loss_{part}.{combo}"], **CLOSE)


def _tokenized_reverse_complement(ids: torch.Tensor) -> torch.Tensor:
    """What tokenizing the reverse-complement strings gives: the bases reversed and complemented, [PAD] and [SEP]
    where they were (written out position by position, independently of the package's helpers)."""
    comp = {7: 10, 8: 9, 9: 8, 10: 7}
    out = ids.clone()
    for row in range(ids.shape[0]):
        positions = [i for i in range(ids.shape[1]) if int(ids[row, i]) not in (0, 1, 2, 4)]
        for i, j in zip(positions, reversed(positions)):
            out[row, i] = comp.get(int(ids[row, j]), int(ids[row, j]))
    return out


def test_two_dimensional_conjoin_equals_the_explicit_strand_pair():
    """A (batch, length) input conjoins with the reverse complement as the tokenizer would give it ([SEP] last)."""
    ids = load_file(FIXTURES / "cls_ph" / "inputs.safetensors")["input_ids_a"]
    model = AutoModelForSequenceClassification.from_pretrained(FIXTURES / "cls_ph", conjoin_eval=True).eval()
    pair = torch.stack([ids, _tokenized_reverse_complement(ids)], dim=-1)
    with torch.no_grad():
        explicit = model(pair).logits
        computed = model(ids).logits
        plain = model(ids, conjoin=False).logits
    torch.testing.assert_close(computed, explicit, **CLOSE)
    assert not torch.allclose(plain, explicit)


def test_conjoined_masked_lm_keeps_sep_in_place():
    model = perturb(CaduceusForMaskedLM(tiny_config()), seed=19).eval()
    ids = torch.cat([random_ids(2, 11, seed=20), torch.ones(2, 1, dtype=torch.long)], dim=1)  # ... [SEP]
    rc = _tokenized_reverse_complement(ids)
    comp = torch.tensor([DNA_COMPLEMENT_MAP.get(i, i) for i in range(16)])
    with torch.no_grad():
        fwd, rc_logits = model(ids).logits, model(rc).logits
        conj = model(ids, conjoin=True).logits
    aligned = torch.cat([rc_logits[:, :-1].flip(1), rc_logits[:, -1:]], dim=1)[..., comp]
    torch.testing.assert_close(conj, (fwd + aligned) / 2)


# --- every config option against the literal original -----------------------------------------------------------

OPTION_GRID = [
    dict(bidirectional=bidir, bidirectional_strategy=strategy, bidirectional_weight_tie=tie, rcps=rcps,
         fused_add_norm=fused)
    for bidir, strategy, tie, rcps, fused in itertools.product(
        [True, False], ["add", "ew_multiply"], [True, False], [False, True], [True, False]
    )
    if bidir or (strategy == "add" and tie)
]
SSM_GRID = [
    dict(rms_norm=False),
    dict(residual_in_fp32=True, rms_norm=False, rcps=True),
    dict(ssm_cfg=dict(d_state=3, d_conv=2, expand=1, dt_rank=3, bias=True, conv_bias=False)),
    dict(ssm_cfg=dict(d_state=5, d_conv=5, expand=3, dt_rank="auto", bias=True), rcps=True, n_layer=3),
    dict(ssm_cfg=dict(bias=True), bidirectional_weight_tie=True, bidirectional_strategy="ew_multiply", rcps=True),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", OPTION_GRID + SSM_GRID, ids=lambda o: json.dumps(o, sort_keys=True))
def test_every_option_matches_the_literal_original(options, backend):
    model = perturb(on_backend(CaduceusForMaskedLM(tiny_config(**options)), backend), seed=1).eval()
    ids = random_ids(2, 23, seed=2, low=0)
    with torch.no_grad():
        got = model(ids).logits
        last = model.caduceus(ids).last_hidden_state
    want, want_last = original_semantics.forward(copy.deepcopy(model), ids)
    torch.testing.assert_close(got.double(), want, **CLOSE)
    torch.testing.assert_close(last.double(), want_last, **CLOSE)


# --- structure, ties and persistence ------------------------------------------------------------------------------


def test_parameter_count_of_the_published_131k_shape():
    config = json.loads((FIXTURES / "mlm_ps" / "config.json").read_text())
    config.update(d_model=256, n_layer=16)
    for rcps in (True, False):
        config["rcps"] = rcps
        with torch.device("meta"):
            model = CaduceusForMaskedLM(CaduceusConfig(**config))
        assert model.num_parameters() == 7_725_312


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("rcps", [False, True])
def test_save_and_reload_round_trip_is_exact(tmp_path, rcps, tie):
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=rcps, bidirectional_weight_tie=tie, ssm_cfg={"bias": True})))
    model.save_pretrained(tmp_path)
    written = load_file(tmp_path / "model.safetensors")
    rev_proj = [k for k in written if "mamba_rev.in_proj" in k or "mamba_rev.out_proj" in k]
    assert bool(rev_proj) == (not tie)
    assert not any(k.startswith("lm_head") and k.endswith("weight") for k in written)
    reloaded, info = CaduceusForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name
    ids = random_ids(1, 9)
    torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    # The ties are live after loading: one tensor, not two equal copies.
    emb = reloaded.get_input_embeddings()
    assert reloaded.get_output_embeddings().weight is emb.weight
    mixer = reloaded.caduceus.backbone.layers[0].mixer
    mixer = mixer.submodule if rcps else mixer
    assert (mixer.mamba_rev.in_proj is mixer.mamba_fwd.in_proj) == tie


def test_saved_files_keep_the_published_layout(tmp_path):
    for name in ("mlm_ph", "mlm_ps"):
        model = AutoModelForMaskedLM.from_pretrained(FIXTURES / name)
        model.save_pretrained(tmp_path / name)
        written = load_file(tmp_path / name / "model.safetensors")
        published = load_file(FIXTURES / name / "model.safetensors")
        assert written.keys() == published.keys()
        assert all(torch.equal(written[k], published[k]) for k in published)


def test_base_model_loads_from_a_masked_lm_checkpoint():
    model, info = AutoModel.from_pretrained(FIXTURES / "mlm_ps", output_loading_info=True)
    assert isinstance(model, Caduceus) and not info["missing_keys"]
    expected = load_file(FIXTURES / "mlm_ps" / "expected_fused.safetensors")["last_hidden_state_a"]
    ids = load_file(FIXTURES / "mlm_ps" / "inputs.safetensors")["input_ids_a"]
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids).last_hidden_state, expected, **CLOSE)


@pytest.mark.parametrize("head", [AutoModelForSequenceClassification, AutoModelForTokenClassification])
@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps"])
def test_classifier_from_a_masked_lm_checkpoint_gets_a_fresh_head(name, head):
    """The backbone loads; the missing head is initialised as a new model's is (normal, initializer_range)."""
    model, info = head.from_pretrained(FIXTURES / name, num_labels=3, output_loading_info=True)
    assert set(info["missing_keys"]) == {k for k in model.state_dict() if k.startswith("score.")}
    std = model.config.initializer_cfg["initializer_range"]
    weight = model.score.weight.detach()
    assert torch.isfinite(weight).all() and 0.5 * std < weight.std() < 1.5 * std
    state = model.state_dict()
    published = {k: v for k, v in load_file(FIXTURES / name / "model.safetensors").items()
                 if not k.startswith("lm_head.")}
    assert published.keys() <= state.keys()
    assert all(torch.equal(state[k], v) for k, v in published.items())


def test_config_is_not_mutated_by_the_model():
    config = tiny_config(rcps=True)
    before = config.to_dict()
    CaduceusForMaskedLM(config)
    CaduceusForSequenceClassification(config)
    assert config.to_dict() == before


def test_head_options_through_the_config(tmp_path):
    config = tiny_config(num_labels=5, pooling_strategy="max", conjoin_eval=True)
    model = CaduceusForSequenceClassification(config)
    assert model.score.out_features == 5
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["pooling_strategy"] == "max" and saved["conjoin_eval"] is True and len(saved["id2label"]) == 5
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.pooling_strategy == "max" and reloaded.config.num_labels == 5


# --- padding, reverse complement, conjoining -------------------------------------------------------------------


def _pad(ids: torch.Tensor, total: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    pad = torch.full((1, total - ids.shape[1]), 4, dtype=ids.dtype)
    ones, zeros = torch.ones_like(ids), torch.zeros_like(pad)
    if side == "left":
        return torch.cat([pad, ids], 1), torch.cat([zeros, ones], 1)
    return torch.cat([ids, pad], 1), torch.cat([ones, zeros], 1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("options", [dict(rcps=False), dict(rcps=True), dict(rcps=True, fused_add_norm=False),
                                     dict(bidirectional=False), dict(bidirectional_strategy="ew_multiply")])
def test_padding_does_not_change_real_tokens(options, side, backend):
    model = perturb(on_backend(CaduceusForMaskedLM(tiny_config(**options)), backend), seed=3).eval()
    short, long = random_ids(1, 13, seed=4), random_ids(1, 20, seed=5)
    padded, mask = _pad(short, 20, side)
    batch = torch.cat([padded, long])
    masks = torch.cat([mask, torch.ones_like(long)])
    real = mask[0].bool()
    with torch.no_grad():
        alone = model(short).logits[0]
        together = model(batch, attention_mask=masks)
        alone_hidden = model.caduceus(short).last_hidden_state[0]
        batch_hidden = model.caduceus(batch, attention_mask=masks).last_hidden_state
    torch.testing.assert_close(together.logits[0][real], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together.logits[1], model(long).logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(batch_hidden[0][real], alone_hidden, rtol=1e-5, atol=1e-5)


def test_without_a_mask_padding_counts():
    model = perturb(CaduceusForMaskedLM(tiny_config()), seed=3).eval()
    short = random_ids(1, 10)
    padded, mask = _pad(short, 14, "left")
    with torch.no_grad():
        assert not torch.allclose(model(padded).logits[0, 4:], model(short).logits[0], atol=1e-4)
        torch.testing.assert_close(model(padded, attention_mask=mask).logits[0, 4:], model(short).logits[0],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_ps_is_exactly_rc_equivariant(fused):
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=True, fused_add_norm=fused)), seed=6).eval()
    ids = random_ids(3, 31, seed=7, low=0)
    comp = torch.tensor([DNA_COMPLEMENT_MAP.get(i, i) for i in range(16)])
    with torch.no_grad():
        logits = model(ids).logits
        rc_logits = model(reverse_complement_ids(ids)).logits
        hidden = model.caduceus(ids, output_hidden_states=True).hidden_states
        rc_hidden = model.caduceus(reverse_complement_ids(ids), output_hidden_states=True).hidden_states
    torch.testing.assert_close(rc_logits, logits.flip(1)[..., comp], rtol=1e-5, atol=1e-5)
    for h, r in zip(hidden, rc_hidden):
        torch.testing.assert_close(r, h.flip(1, 2), rtol=1e-5, atol=1e-5)


def test_ps_sequence_and_token_heads_are_rc_invariant():
    config = tiny_config(rcps=True, num_labels=3)
    ids = random_ids(2, 17, seed=8)
    for cls in (CaduceusForSequenceClassification, CaduceusForTokenClassification):
        model = perturb(cls(config), seed=9).eval()
        with torch.no_grad():
            out, rc_out = model(ids).logits, model(reverse_complement_ids(ids)).logits
        if cls is CaduceusForTokenClassification:
            rc_out = rc_out.flip(1)
        torch.testing.assert_close(rc_out, out, rtol=1e-5, atol=1e-5)


def test_ph_post_hoc_conjoining():
    """Conjoined Ph outputs average the forward and the aligned RC pass, which makes them RC-equivariant."""
    model = perturb(CaduceusForMaskedLM(tiny_config()), seed=10).eval()
    ids = random_ids(2, 15, seed=11)
    comp = torch.tensor([DNA_COMPLEMENT_MAP.get(i, i) for i in range(16)])
    with torch.no_grad():
        plain = model(ids).logits
        rc_plain = model(reverse_complement_ids(ids)).logits
        conj = model(ids, conjoin=True).logits
        rc_conj = model(reverse_complement_ids(ids), conjoin=True).logits
        emb = model.caduceus(ids, conjoin=True).last_hidden_state
        rc_emb = model.caduceus(reverse_complement_ids(ids), conjoin=True).last_hidden_state
    torch.testing.assert_close(conj, (plain + rc_plain.flip(1)[..., comp]) / 2)
    torch.testing.assert_close(rc_conj, conj.flip(1)[..., comp], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rc_emb, emb.flip(1), rtol=1e-5, atol=1e-5)
    model.config.conjoin_eval = True
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, conj)


def test_conjoining_respects_padding():
    model = perturb(CaduceusForMaskedLM(tiny_config()), seed=12).eval()
    short = random_ids(1, 9, seed=13)
    padded, mask = _pad(short, 14, "left")
    with torch.no_grad():
        alone = model(short, conjoin=True).logits[0]
        batched = model(padded, attention_mask=mask, conjoin=True).logits[0, 5:]
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


# --- any 0/1 mask: masked positions are skipped wherever they are ----------------------------------------------------


def _gapped_mask(ids: torch.Tensor, seed: int) -> torch.Tensor:
    """Random gaps anywhere (about a third of the positions), [PAD] masked too; every row keeps real tokens."""
    keep = torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed)) > 0.35
    keep[:, -1] = True
    return (keep & (ids != 4)).long()


def _without_gaps(ids: torch.Tensor, mask: torch.Tensor, row: int) -> torch.Tensor:
    return ids[row][mask[row].bool()][None]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name, conjoin", [("mlm_ph", False), ("mlm_ph", True), ("mlm_ps", False)])
def test_gapped_masks_equal_the_sequence_without_the_gaps(name, conjoin, backend):
    ids = load_file(FIXTURES / name / "inputs.safetensors")["input_ids_a"][:, :40]
    mask = _gapped_mask(ids, seed=20)
    mlm = load_mlm(name, backend=backend)
    token = AutoModelForTokenClassification.from_pretrained(FIXTURES / name, num_labels=3, scan_backend=backend)
    token = perturb(token.eval(), seed=21, scale=0.01)
    heads = {
        "base": lambda x, m=None: mlm.caduceus(x, attention_mask=m, conjoin=conjoin, output_hidden_states=True),
        "mlm": lambda x, m=None: mlm(x, attention_mask=m, conjoin=conjoin),
        "token": lambda x, m=None: token(x, attention_mask=m, conjoin=conjoin),
    }
    with torch.no_grad():
        for head, run in heads.items():
            gapped = run(ids, mask)
            assert all(torch.isfinite(t).all() for t in gapped.to_tuple() if torch.is_tensor(t))
            for row in range(ids.shape[0]):
                real = mask[row].bool()
                alone = run(_without_gaps(ids, mask, row))
                torch.testing.assert_close(gapped[0][row][real], alone[0][0], rtol=1e-5, atol=1e-5, msg=head)
                if head == "base":
                    for h, h_alone in zip(gapped.hidden_states, alone.hidden_states):
                        assert torch.isfinite(h).all()
                        torch.testing.assert_close(h[row][real], h_alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max", "first", "last"])
@pytest.mark.parametrize("name, conjoin", [("cls_ph", False), ("cls_ph", True), ("cls_ps", False)])
def test_gapped_masks_in_sequence_classification(name, conjoin, pooling):
    ids = load_file(FIXTURES / name / "inputs.safetensors")["input_ids_a"][:, :40]
    mask = _gapped_mask(ids, seed=22)
    model = AutoModelForSequenceClassification.from_pretrained(FIXTURES / name, pooling_strategy=pooling).eval()
    with torch.no_grad():
        gapped = model(ids, attention_mask=mask, conjoin=conjoin).logits
        alone = torch.cat([model(_without_gaps(ids, mask, row), conjoin=conjoin).logits for row in range(2)])
    torch.testing.assert_close(gapped, alone, rtol=1e-5, atol=1e-5)


def test_masks_are_read_as_real_where_nonzero():
    """Documented binarisation: any nonzero mask value is a real token (validate_inputs rejects values not 0/1)."""
    model = perturb(CaduceusForSequenceClassification(tiny_config(rcps=True, num_labels=2)), seed=23).eval()
    ids = random_ids(2, 12, seed=24)
    mask = _gapped_mask(ids, seed=25)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        for variant in (mask.bool(), mask.float(), mask * 3, mask.float() * 0.5):
            torch.testing.assert_close(model(ids, attention_mask=variant).logits, expected, rtol=0, atol=0)


def test_a_row_without_real_tokens_gives_finite_outputs():
    ids = random_ids(2, 6)
    mask = torch.tensor([[0] * 6, [1] * 6])
    for pooling in ("mean", "max", "first", "last"):
        model = CaduceusForSequenceClassification(tiny_config(rcps=True, pooling_strategy=pooling)).eval()
        with torch.no_grad():
            logits = model(ids, attention_mask=mask).logits
        torch.testing.assert_close(logits[0], torch.zeros(2))
        torch.testing.assert_close(logits[1], model(ids[1:]).logits[0])


@pytest.mark.parametrize("pooling", ["mean", "max", "first", "last"])
@pytest.mark.parametrize("rcps", [False, True])
def test_pooling_respects_the_attention_mask(pooling, rcps):
    model = perturb(CaduceusForSequenceClassification(tiny_config(rcps=rcps, pooling_strategy=pooling)), seed=14)
    model.eval()
    short = random_ids(1, 11, seed=15)
    with torch.no_grad():
        alone = model(short).logits
        for side in ("left", "right"):
            padded, mask = _pad(short, 16, side)
            torch.testing.assert_close(model(padded, attention_mask=mask).logits, alone, rtol=1e-5, atol=1e-5)


def test_token_classification_shapes_and_loss():
    model = CaduceusForTokenClassification(tiny_config(num_labels=4))
    ids = random_ids(2, 10)
    labels = torch.randint(0, 4, (2, 10))
    labels[0, :3] = -100
    out = model(ids, labels=labels)
    assert out.logits.shape == (2, 10, 4)
    out.loss.backward()
    assert model.score.weight.grad is not None


def test_regression_and_multilabel_heads():
    model = CaduceusForSequenceClassification(tiny_config(num_labels=1))
    out = model(random_ids(2, 8), labels=torch.tensor([0.5, -1.0]))
    torch.testing.assert_close(out.loss, ((out.logits.squeeze(-1) - torch.tensor([0.5, -1.0])) ** 2).mean())
    model = CaduceusForSequenceClassification(tiny_config(num_labels=3, problem_type="multi_label_classification"))
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = model(random_ids(2, 8), labels=target)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, target))
    assert model.config.problem_type == "multi_label_classification"


def test_classification_losses_with_num_items_in_batch():
    """Trainer's normaliser: every problem type sums its per-item losses and divides by num_items_in_batch."""
    ids = random_ids(2, 8)
    F = torch.nn.functional
    cases = [
        (dict(num_labels=3), torch.tensor([2, 0]), lambda lg, y: F.cross_entropy(lg, y, reduction="sum")),
        (dict(num_labels=1), torch.tensor([0.5, -1.0]), lambda lg, y: ((lg.squeeze(-1) - y) ** 2).sum()),
        (dict(num_labels=3, problem_type="multi_label_classification"), torch.tensor([[1.0, 0, 1], [0, 0, 1]]),
         lambda lg, y: F.binary_cross_entropy_with_logits(lg, y, reduction="sum")),
    ]
    for options, labels, summed in cases:
        config = tiny_config(**options)
        model = CaduceusForSequenceClassification(config)
        out = model(ids, labels=labels, num_items_in_batch=torch.tensor(8))
        torch.testing.assert_close(out.loss, summed(out.logits, labels) / 8)
        assert config.problem_type == options.get("problem_type")
    token = CaduceusForTokenClassification(tiny_config(num_labels=3))
    labels = torch.tensor([[0, 1, 2, -100, 1, 1, 0, -100]] * 2)
    out = token(ids, labels=labels, num_items_in_batch=20)
    ce = F.cross_entropy(out.logits.reshape(-1, 3), labels.reshape(-1), ignore_index=-100, reduction="sum")
    torch.testing.assert_close(out.loss, ce / 20)
    assert token(ids, labels=torch.full_like(ids, -100)).loss.item() == 0.0


@pytest.mark.parametrize("rcps", [False, True])
@pytest.mark.parametrize(
    "head, labels",
    [
        (Caduceus, None),
        (CaduceusForMaskedLM, torch.tensor([[7, -100, 9, 10, -100, 8]] * 2)),
        (CaduceusForSequenceClassification, torch.tensor([1, 0])),
        (CaduceusForTokenClassification, torch.tensor([[1, -100, 0, 1, 1, 0]] * 2)),
    ],
)
def test_return_dict_false_is_the_dict_output_as_a_tuple(head, labels, rcps):
    model = perturb(head(tiny_config(rcps=rcps)), seed=36).eval()
    ids = random_ids(2, 6, seed=37)
    mask = torch.tensor([[1, 1, 0, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    kwargs = dict(attention_mask=mask, output_hidden_states=True)
    if labels is not None:
        kwargs["labels"] = labels
    with torch.no_grad():
        as_dict = model(ids, **kwargs)
        as_tuple = model(ids, return_dict=False, **kwargs)
        model.config.return_dict = False
        from_config = model(ids, **kwargs)
    assert type(as_tuple) is tuple and type(from_config) is tuple
    expected = as_dict.to_tuple()
    assert len(as_tuple) == len(expected) == (3 if labels is not None else 2)
    torch.testing.assert_close(as_tuple, expected, rtol=0, atol=0)
    torch.testing.assert_close(from_config, expected, rtol=0, atol=0)


# --- training paths -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", [dict(), dict(rcps=True), dict(bidirectional_weight_tie=False, rms_norm=False)])
def test_gradient_checkpointing_gives_the_same_gradients(options, backend):
    model = perturb(on_backend(CaduceusForMaskedLM(tiny_config(**options)), backend), seed=16)
    ids = random_ids(2, 12, seed=17)
    model.train()

    def grads():
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.activation_checkpointing_enable()
    checkpointed = grads()
    assert all(model.caduceus.backbone.layers[i].gradient_checkpointing for i in range(2))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-6)


def test_backward_reaches_every_parameter():
    for options in OPTION_GRID[::3] + SSM_GRID:
        model = CaduceusForMaskedLM(tiny_config(**options))
        ids = random_ids(2, 9)
        model(ids, labels=ids).loss.backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, (options, missing)


def test_bfloat16_on_cpu():
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=True)), seed=18).eval()
    ids = random_ids(2, 20)
    with torch.no_grad():
        reference = model(ids).logits
        bf16 = copy.deepcopy(model).to(torch.bfloat16)
        logits = bf16(ids).logits
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, reference, rtol=0.05, atol=0.05)
    loss = bf16(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)


# A model loaded in bfloat16 against the same weights in float32, in units of bf16's rounding u = 2^-8 (half its
# relative spacing). benchmarks/bf16_accuracy.py measured, on every MLM fixture, input and backend: max |logit
# difference| <= 3.0 u x max |logit|, top token agreement >= 97.3 %, gradient relative error <= 0.018 (4.6 u) per
# parameter (benchmarks/README.md, "bf16"). The bounds leave about 2.5x of that.
BF16_U = 2.0**-8
BF16_LOGIT_BOUND = 8 * BF16_U
BF16_GRAD_BOUND = 12 * BF16_U
BF16_ARGMAX_AGREEMENT = 0.95


def load_in(name, dtype, backend):
    return AutoModelForMaskedLM.from_pretrained(FIXTURES / name, scan_backend=backend, dtype=dtype).eval()


@pytest.mark.parametrize("backend", ["cpu", "reference", "chunked"])
@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps"])
def test_bfloat16_logits_follow_float32_on_the_fixtures(name, backend):
    """bf16 projections with float32 scans and norms: logits within the documented bound of float32's, and the same
    top token wherever float32's margin between its two best tokens exceeds twice that bound."""
    inputs = load_file(FIXTURES / name / "inputs.safetensors")
    fp32, bf16 = load_in(name, torch.float32, backend), load_in(name, torch.bfloat16, backend)
    assert bf16.caduceus.backbone.layers[0].norm.weight.dtype == torch.bfloat16
    for key in ("input_ids_a", "input_ids_b"):
        with torch.no_grad():
            ref, got = fp32(inputs[key]).logits, bf16(inputs[key]).logits
        bound = BF16_LOGIT_BOUND * ref.abs().max()
        assert (got - ref).abs().max() <= bound
        top2 = ref.topk(2, dim=-1).values
        clear = top2[..., 0] - top2[..., 1] > 2 * bound
        agree = got.argmax(-1) == ref.argmax(-1)
        assert agree[clear].all()
        assert agree.float().mean() >= BF16_ARGMAX_AGREEMENT


@pytest.mark.parametrize("backend", ["cpu", "reference", "chunked"])
@pytest.mark.parametrize("name", ["mlm_ph", "mlm_ps"])
def test_bfloat16_gradients_follow_float32(name, backend):
    """Training in bf16: every parameter's gradient of the MLM loss within the documented relative bound."""
    ids = load_file(FIXTURES / name / "inputs.safetensors")["input_ids_a"]
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        model = load_in(name, dtype, backend).train()
        model(ids, labels=ids).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    ref, got = grads
    for n, g in ref.items():
        assert got[n].dtype == torch.bfloat16, n
        assert (got[n].float() - g).norm() <= BF16_GRAD_BOUND * g.norm(), n


# --- bad input ------------------------------------------------------------------------------------------------------


def test_bad_shapes_give_clear_errors_in_forward():
    model = CaduceusForMaskedLM(tiny_config())
    ids = random_ids(2, 8)
    with pytest.raises(ValueError, match="shape"):
        model(ids[0])
    with pytest.raises(ValueError, match="empty"):
        model(ids[:, :0])
    with pytest.raises(ValueError, match="attention_mask"):
        model(ids, attention_mask=torch.ones(2, 7))
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="labels must have shape"):
        model(ids, labels=ids[:, :3])
    with pytest.raises(ValueError, match="integer"):
        model(ids.float())


def test_auto_classes_are_registered():
    config = AutoModelForMaskedLM.from_pretrained(FIXTURES / "mlm_ph").config
    assert type(config) is CaduceusConfig
    assert caduceus_hf.CaduceusForTokenClassification.config_class is CaduceusConfig


# --- embeddings: get / set / resize ---------------------------------------------------------------------------------


def _complement_tables(model):
    if not model.config.rcps:
        return []
    return [model.caduceus.backbone.embeddings.word_embeddings.complement_map, model.lm_head.complement_map]


@pytest.mark.parametrize("rcps", [False, True])
def test_resize_token_embeddings_no_op_forms(rcps):
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=rcps)), seed=30).eval()
    ids = random_ids(2, 9, seed=31)
    with torch.no_grad():
        before = model(ids).logits
    assert model.resize_token_embeddings() is model.get_input_embeddings()
    model.resize_token_embeddings(16)
    model.resize_token_embeddings(pad_to_multiple_of=8)
    assert model.get_input_embeddings().weight.shape[0] == 16 and model.config.vocab_size == 16
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)


@pytest.mark.parametrize("rcps", [False, True])
def test_resize_token_embeddings_grows_with_self_complementary_ids(tmp_path, rcps):
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=rcps)), seed=32).eval()
    ids = random_ids(2, 9, seed=33)
    with torch.no_grad():
        before = model(ids).logits
    embeddings = model.resize_token_embeddings(21)
    assert embeddings is model.get_input_embeddings() and embeddings.weight.shape == (21, 16)
    assert model.get_output_embeddings().weight is embeddings.weight  # still tied
    assert model.config.vocab_size == 21
    expected = [0, 1, 2, 3, 4, 5, 6, 10, 9, 8, 7, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
    assert [model.config.complement_map[i] for i in range(21)] == expected
    for table in _complement_tables(model):
        assert table.tolist() == expected
    new_ids = torch.tensor([[7, 20, 9, 18]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits[..., :16], before, rtol=1e-6, atol=1e-6)
        logits = model(new_ids).logits
    assert logits.shape == (1, 4, 21)
    if rcps:  # still exactly RC-equivariant, the new ids complementing to themselves
        with torch.no_grad():
            rc_logits = model(reverse_complement_ids(new_ids, model.config.complement_map)).logits
        torch.testing.assert_close(rc_logits, logits.flip(1)[..., torch.tensor(expected)], rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = CaduceusForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(new_ids).logits, logits, rtol=0, atol=0)


@pytest.mark.parametrize("rcps", [False, True])
def test_resize_token_embeddings_shrinks(tmp_path, rcps):
    model = perturb(CaduceusForMaskedLM(tiny_config(rcps=rcps)), seed=34).eval()
    model.resize_token_embeddings(10)
    # T (10) is cut off, so A (7) complements to itself; C and G keep each other.
    expected = [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]
    assert [model.config.complement_map[i] for i in range(10)] == expected
    for table in _complement_tables(model):
        assert table.tolist() == expected
    ids = torch.tensor([[7, 8, 9, 1]])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, 4, 10)
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(CaduceusForMaskedLM.from_pretrained(tmp_path).eval()(ids).logits, logits)


@pytest.mark.parametrize("rcps", [False, True])
def test_set_input_and_output_embeddings(rcps):
    model = CaduceusForMaskedLM(tiny_config(rcps=rcps)).eval()
    ids = random_ids(1, 7, seed=35)
    assert isinstance(model.get_input_embeddings(), torch.nn.Embedding)
    assert type(model.get_output_embeddings()) is torch.nn.Linear
    with torch.no_grad():  # the input embedding's output is what forward takes as inputs_embeds
        torch.testing.assert_close(model(inputs_embeds=model.get_input_embeddings()(ids)).logits, model(ids).logits)
    embedding = torch.nn.Embedding(16, 16)
    model.set_input_embeddings(embedding)
    assert model.get_input_embeddings().weight is embedding.weight
    model.set_output_embeddings(torch.nn.Linear(16, 16, bias=False))
    torch.nn.init.zeros_(model.get_output_embeddings().weight)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, torch.zeros(1, 7, 16))
        hidden = model.caduceus.backbone.embeddings(ids)
    assert torch.equal(hidden[..., :16], embedding(ids))
