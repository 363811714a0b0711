"""`CaduceusTrainer`: Hugging Face Trainer with the weight-decay exemptions of Mamba / Caduceus training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainingArguments

from ..mixer import Mamba
from ..ops.norm import RMSNorm


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters the original recipe never decays: every norm weight (and bias), and each mixer's A_log
    and D (the SSM's state decay rates and skip gains, marked `_no_weight_decay` in mamba-ssm). Decaying A_log pulls
    every channel towards the same slow decay rate."""
    names = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, (RMSNorm, nn.LayerNorm)):
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
        elif isinstance(module, Mamba):
            names.update((prefix + "A_log", prefix + "D"))
    return names


class CaduceusTrainer(Trainer):
    """Trainer with two differences from the stock one, which `pretrain` and `finetune` use (a plain Trainer also
    works with the models):

    * AdamW leaves norm weights, A_log and D undecayed (see `no_weight_decay_names`), on top of Trainer's own
      exemptions (biases, norms found by name);
    * evaluation and prediction always see the whole dataset: `dataloader_drop_last` applies to training batches
      only (the stock Trainer also drops the last evaluation batch, so metrics would miss examples).
    """

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        exempt = no_weight_decay_names(model)
        return [name for name in super().get_decay_parameter_names(model) if name not in exempt]

    def get_eval_dataloader(self, eval_dataset: str | Dataset | None = None) -> DataLoader:
        with _keep_last_batch(self.args):
            return super().get_eval_dataloader(eval_dataset)

    def get_test_dataloader(self, test_dataset: Dataset) -> DataLoader:
        with _keep_last_batch(self.args):
            return super().get_test_dataloader(test_dataset)


@contextmanager
def _keep_last_batch(args: TrainingArguments) -> Iterator[None]:
    drop_last = args.dataloader_drop_last
    args.dataloader_drop_last = False
    try:
        yield
    finally:
        args.dataloader_drop_last = drop_last


__all__ = ["CaduceusTrainer", "no_weight_decay_names"]
