"""Trainer metrics, computed once over the whole evaluation set (Trainer concatenates every batch's predictions
before calling `compute_metrics`; nothing here is averaged per batch).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from transformers import EvalPrediction

from ..extras import require


def _as_array(value) -> np.ndarray:
    return value[0] if isinstance(value, tuple) else value


def label_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """accuracy, Matthews correlation and F1 of predicted class ids against true ones (1-d arrays, same length).

    F1 is that of class 1 for two classes, and the unweighted mean over classes (macro) for more.
    """
    metrics = require("sklearn.metrics", "classification metrics", "train")
    n_classes = int(max(predictions.max(initial=0), labels.max(initial=0))) + 1
    average = "binary" if n_classes <= 2 else "macro"
    return {
        "accuracy": float(metrics.accuracy_score(labels, predictions)),
        "mcc": float(metrics.matthews_corrcoef(labels, predictions)),
        "f1": float(metrics.f1_score(labels, predictions, average=average, zero_division=0.0)),
        "n": int(labels.size),
    }


def sequence_classification_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """compute_metrics for CaduceusForSequenceClassification: predictions (N, num_labels) logits, labels (N,)."""
    logits = _as_array(eval_pred.predictions)
    labels = np.asarray(eval_pred.label_ids).reshape(-1)
    return label_metrics(np.asarray(logits).argmax(-1), labels)


def regression_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """compute_metrics for regression (num_labels 1): mse, Pearson and Spearman correlation of predictions (N, 1)
    with targets (N,). A correlation is NaN when predictions or targets are constant (it is undefined)."""
    stats = require("scipy.stats", "regression metrics", "train")
    predictions = np.asarray(_as_array(eval_pred.predictions), dtype=np.float64).reshape(-1)
    targets = np.asarray(eval_pred.label_ids, dtype=np.float64).reshape(-1)
    constant = np.ptp(predictions) == 0 or np.ptp(targets) == 0
    return {
        "mse": float(np.mean((predictions - targets) ** 2)),
        "pearson": float("nan") if constant else float(stats.pearsonr(predictions, targets)[0]),
        "spearman": float("nan") if constant else float(stats.spearmanr(predictions, targets)[0]),
        "n": int(targets.size),
    }


def token_classification_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """compute_metrics for CaduceusForTokenClassification, over labelled positions (labels != -100) only.

    predictions: (N, L, num_labels) logits, or (N, L) class ids from `argmax_logits`; labels (N, L). Trainer pads
    batches of different lengths with -100 in both, which the label mask drops.
    """
    predictions = np.asarray(_as_array(eval_pred.predictions))
    labels = np.asarray(eval_pred.label_ids)
    if predictions.ndim == labels.ndim + 1:
        predictions = predictions.argmax(-1)
    keep = labels != -100
    return label_metrics(predictions[keep], labels[keep])


def argmax_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """preprocess_logits_for_metrics that keeps class ids instead of logits (saves memory for token tasks)."""
    return _as_array(logits).argmax(-1)


def masked_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """preprocess_logits_for_metrics for MLM: (B, L, V) logits, (B, L) labels -> (B, L) negative log-likelihood in
    nats of the true token at masked positions, 0 elsewhere. Keeps one float per token instead of V."""
    logits = _as_array(logits)
    masked = labels != -100
    log_probs = F.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(masked, nll, torch.zeros_like(nll))


def masked_lm_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """compute_metrics for MLM with `masked_token_nll`: the mean loss per masked base over the whole set.

    Returns nll_nats (per masked base), nll_bits (the same in bits), perplexity and masked (count).
    """
    nll = np.asarray(_as_array(eval_pred.predictions), dtype=np.float64)
    labels = np.asarray(eval_pred.label_ids)
    masked = labels != -100
    count = int(masked.sum())
    if count == 0:
        raise ValueError("the evaluation set has no masked positions to score")
    mean = float(nll[masked].sum() / count)
    return {"nll_nats": mean, "nll_bits": mean / math.log(2), "perplexity": math.exp(mean), "masked": count}


__all__ = [
    "argmax_logits",
    "label_metrics",
    "masked_lm_metrics",
    "masked_token_nll",
    "regression_metrics",
    "sequence_classification_metrics",
    "token_classification_metrics",
]
