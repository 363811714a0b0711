"""Worker of test_training_ddp.py, run by torchrun: a few Trainer steps of MLM under DDP on CPU (gloo).

Usage: torchrun --nproc_per_node 2 tests/training_ddp_worker.py OUTPUT_DIR. Each rank writes rank<k>.json with its
parameter checksums before and after training, the world size Trainer saw, and a digest of the data it trained on.
"""

from __future__ import annotations

import gc
import hashlib
import json
import sys
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, set_seed

import caduceus_hf
from caduceus_hf.training.data import MLMCollator


def checksums(model: torch.nn.Module) -> list[float]:
    return [float(p.detach().double().sum()) for p in model.parameters()]


def main(output_dir: str) -> None:
    torch.set_num_threads(1)
    set_seed(0)
    tokenizer = caduceus_hf.CaduceusTokenizer()
    generator = torch.Generator().manual_seed(1)
    texts = ["".join("ACGT"[i] for i in torch.randint(4, (48,), generator=generator).tolist()) for _ in range(32)]
    dataset = [dict(tokenizer(t)) for t in texts]
    config = caduceus_hf.CaduceusConfig(d_model=16, n_layer=1, ssm_cfg={"d_state": 4})
    model = caduceus_hf.CaduceusForMaskedLM(config)
    initial = checksums(model)

    seen = hashlib.sha256()
    collator = MLMCollator(tokenizer)

    def collate(examples):
        seen.update(json.dumps([example["input_ids"] for example in examples]).encode())
        return collator(examples)

    args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2, use_cpu=True,
        ddp_backend="gloo", report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=1,
    )
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collate)
    trainer.train()
    result = {
        "rank": args.process_index,
        "world_size": args.world_size,
        "initial": initial,
        "final": checksums(model),
        "data_digest": seen.hexdigest(),
        "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
    }
    Path(output_dir, f"rank{args.process_index}.json").write_text(json.dumps(result))
    # An orderly shutdown. Free the DDP-wrapped model while the process group is alive: destroyed afterwards (when
    # main returns), it sometimes hung the process, and without destroy_process_group gloo sometimes aborted at exit.
    del trainer, model
    gc.collect()
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
