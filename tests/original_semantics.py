"""A literal, slow restatement of the original Caduceus forward pass (from shared/docs/original-model.md), for tests.

It reads a caduceus_hf model's parameters but none of its code paths: flips are materialised, each direction runs its
own projections, the RCPS wrapper concatenates and flips as the original does, and the fused branch reads the strands
in the original's order. The package folds these away; tests compare the two over every config option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rc(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-2, -1)


def scan(u, delta, A, B, C, D):
    """Sequential selective scan, (b, l, d) layout, float64 for a sharp reference."""
    b, length, d = u.shape
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * u[:, t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, 1) + u * D


def mamba(m, x):
    xz = F.linear(x, m.in_proj.weight, m.in_proj.bias)
    xi, z = xz.chunk(2, -1)
    k = m.conv1d.weight.shape[-1]
    xc = F.conv1d(xi.transpose(1, 2), m.conv1d.weight, m.conv1d.bias, padding=k - 1, groups=xi.shape[-1])
    xi = F.silu(xc[..., : x.shape[1]]).transpose(1, 2)
    dt, B, C = torch.split(F.linear(xi, m.x_proj.weight), [m.dt_rank, m.d_state, m.d_state], -1)
    delta = F.softplus(F.linear(dt, m.dt_proj.weight, m.dt_proj.bias))
    y = scan(xi, delta, -torch.exp(m.A_log), B, C, m.D) * F.silu(z)
    return F.linear(y, m.out_proj.weight, m.out_proj.bias)


def bimamba(mix, x):
    out = mamba(mix.mamba_fwd, x)
    if mix.mamba_rev is None:
        return out
    out_rev = mamba(mix.mamba_rev, x.flip(1)).flip(1)
    return out + out_rev if mix.strategy == "add" else out * out_rev


def layer_norm(module, x, rms):
    if rms:
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + module.eps) * module.weight
    return F.layer_norm(x, (x.shape[-1],), module.weight, module.bias, module.eps)


def forward(model, input_ids):
    """Logits of a CaduceusForMaskedLM (float64) computed the original's way; also the last hidden state."""
    cfg = model.config
    model = model.double()
    bb = model.caduceus.backbone
    emb = bb.embeddings.word_embeddings
    rms = cfg.rms_norm
    d = cfg.d_model
    if cfg.rcps:
        comp = torch.tensor([cfg.complement_map[i] for i in range(cfg.vocab_size)])
        rc_ids = comp[input_ids.flip(-1)]
        hidden = torch.cat([emb.embedding.weight[input_ids], rc(emb.embedding.weight[rc_ids])], -1)
    else:
        hidden = emb.weight[input_ids]
    residual = None
    for layer in bb.layers:
        nm = layer.norm
        if not cfg.rcps:
            residual = hidden if residual is None else hidden + residual
            hidden = bimamba(layer.mixer, layer_norm(nm, residual, rms))
            continue
        if cfg.fused_add_norm:  # the fused branch: second half as the forward strand
            r2 = None if residual is None else residual[..., d:]
            r1 = None if residual is None else residual[..., :d]
            res_f = hidden[..., d:] if r2 is None else hidden[..., d:] + r2
            res_rc = rc(hidden[..., :d]) if r1 is None else rc(hidden[..., :d]) + rc(r1)
        else:  # RCPSAddNormWrapper
            res_f = hidden[..., :d] if residual is None else hidden[..., :d] + residual[..., :d]
            res_rc = rc(hidden[..., d:]) if residual is None else rc(hidden[..., d:]) + rc(residual[..., d:])
        normed = torch.cat([layer_norm(nm, res_f, rms), rc(layer_norm(nm, res_rc, rms))], -1)
        residual = torch.cat([res_f, rc(res_rc)], -1)
        mix = layer.mixer.submodule
        hidden = torch.cat([bimamba(mix, normed[..., :d]), rc(bimamba(mix, rc(normed[..., d:])))], -1)
    residual = hidden if residual is None else hidden + residual
    if cfg.rcps:
        last = torch.cat([layer_norm(bb.norm_f, residual[..., :d], rms),
                          rc(layer_norm(bb.norm_f, rc(residual[..., d:]), rms))], -1)
        w = emb.embedding.weight
        logits = F.linear(last[..., :d], w) + F.linear(last[..., d:].flip(-1), w[comp])
    else:
        last = layer_norm(bb.norm_f, residual, rms)
        logits = F.linear(last, emb.weight)
    return logits, last
