"""`zoo demo`: a small but real zoo built from nothing - a tiny Llama pretrained on
Python's standard library sources (byte level), fine-tuned on two different packages,
merged with TIES through the operator registry; every model is registered with its run and
lineage."""
from __future__ import annotations

import time
from typing import Callable

from .catalog import Catalog, ModelEntry, Parent, RunRecord
from .runner import run_operator
from .textdata import python_source_bytes
from .writer import save_tensors

DEMO_CONFIG = dict(vocab_size=256, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                   tie_word_embeddings=False)
PRETRAIN = ["json", "csv", "argparse", "collections"]
FINETUNES = {"email": ["email"], "asyncio": ["asyncio"]}


def _train(model, data: bytes, steps: int, seed: int, lr: float) -> float:
    """Plain next-byte training with AdamW; returns the mean loss of the last 10 steps."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    tokens = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    seq, batch, losses = 64, 16, []
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(tokens) - seq - 1, (batch,), generator=gen)
        x = torch.stack([tokens[s : s + seq] for s in starts])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    tail = losses[-10:]
    return sum(tail) / len(tail)


def _register(cat: Catalog, model, name: str, run: RunRecord, parents: list[Parent], loss: float) -> ModelEntry:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = {**model.config.to_dict(), "architectures": [type(model).__name__]}
    written = save_tensors(cat.incoming_path(), state, config=config,
                           metadata={"operator": run.operator, "params": run.params})
    return cat.register(written, name, run=run, inputs=parents, tags=["demo"], metrics={"pytext/train_loss": round(loss, 4)})


def build_demo_zoo(cat: Catalog, steps: int = 60, seed: int = 0, log: Callable[[str], None] = print) -> list[ModelEntry]:
    """Returns [base, *fine-tunes, merge] as registered."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    base_model = LlamaForCausalLM(LlamaConfig(**DEMO_CONFIG))
    t0 = time.perf_counter()
    log(f"pretraining demo-llama on {', '.join(PRETRAIN)} sources ({steps} steps)")
    loss = _train(base_model, python_source_bytes(PRETRAIN), steps, seed, lr=3e-3)
    params = {"data": PRETRAIN, "steps": steps, "seed": seed, "lr": 3e-3, "config": DEMO_CONFIG}
    base = _register(cat, base_model, "demo-llama", RunRecord("demo.pretrain", "1", params, seconds=time.perf_counter() - t0),
                     [], loss)
    made = [base]
    for i, (suffix, pkgs) in enumerate(FINETUNES.items()):
        t0 = time.perf_counter()
        log(f"fine-tuning demo-llama-{suffix} on {', '.join(pkgs)} sources ({steps // 2} steps)")
        ft = copy.deepcopy(base_model)
        loss = _train(ft, python_source_bytes(pkgs), steps // 2, seed + 1 + i, lr=1e-3)
        params = {"data": pkgs, "steps": steps // 2, "seed": seed + 1 + i, "lr": 1e-3}
        made.append(_register(cat, ft, f"demo-llama-{suffix}", RunRecord("demo.finetune", "1", params,
                              seconds=time.perf_counter() - t0), [Parent(base.id, "base")], loss))
    log("merging the fine-tunes with TIES (merge.ties, density 0.5)")
    merged = run_operator(
        cat, "merge.ties", [Parent(base.id, "base")] + [Parent(m.id, "input", 0.5) for m in made[1:]],
        {"parameters": {"density": 0.5}, "model_parameters": [{"weight": 0.5}] * (len(made) - 1)},
        "demo-llama-ties", tags=["demo"])
    made.append(merged.entry)
    return made
