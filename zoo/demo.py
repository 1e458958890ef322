"""`zoo demo`: a small but real zoo built from nothing - a tiny Llama pretrained on
Python's standard library sources (byte level), fine-tuned on two different packages,
merged with TIES. Every step is an operator run (`demo.pretrain`, `demo.finetune`,
`merge.ties`), so every model has its card, its run with a cache key, and its lineage."""
from __future__ import annotations

from typing import Any, Callable

from pydantic import Field

from .catalog import Catalog, ModelEntry, Parent
from .registry import InputSpec, Operator, OperatorParams, register
from .runner import OperatorCall, OperatorOutput, run_operator
from .textdata import python_source_bytes

DEMO_CONFIG = dict(vocab_size=256, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                   tie_word_embeddings=False)
PRETRAIN = ["json", "csv", "argparse", "collections"]
FINETUNES = {"email": ["email"], "asyncio": ["asyncio"]}


class FinetuneParams(OperatorParams):
    data: list[str] = Field(..., min_length=1, description="standard-library packages whose Python sources are the text")
    steps: int = Field(30, ge=1)
    seed: int = 0
    lr: float = Field(1e-3, gt=0)


class PretrainParams(FinetuneParams):
    steps: int = Field(60, ge=1)
    lr: float = Field(3e-3, gt=0)
    config: dict[str, Any] = Field(default_factory=lambda: dict(DEMO_CONFIG), description="LlamaConfig fields")


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


def _output(call: OperatorCall, model, loss: float) -> OperatorOutput:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = {**model.config.to_dict(), "architectures": [type(model).__name__]}
    return OperatorOutput(call.write_tensors(state, config=config), metrics={"pytext/train_loss": round(loss, 4)})


def _pretrain(call: OperatorCall) -> OperatorOutput:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    p: PretrainParams = call.params
    torch.manual_seed(p.seed)
    model = LlamaForCausalLM(LlamaConfig(**p.config))
    return _output(call, model, _train(model, python_source_bytes(p.data), p.steps, p.seed, p.lr))


def _finetune(call: OperatorCall) -> OperatorOutput:
    from .families import family_of

    p: FinetuneParams = call.params
    ckpt = call.checkpoint(0)
    model = family_of(ckpt)[0].load(ckpt)
    return _output(call, model, _train(model, python_source_bytes(p.data), p.steps, p.seed, p.lr))


register(Operator("demo.pretrain", "1", PretrainParams, _pretrain,
                  "the demo's tiny Llama, pretrained from scratch on Python sources (bytes)", deterministic=False,
                  inputs=()))
register(Operator("demo.finetune", "1", FinetuneParams, _finetune,
                  "the demo's fine-tune of a model (role base) on other Python sources", relation="finetune",
                  default_role="base", deterministic=False,
                  inputs=(InputSpec("base"),)))


def build_demo_zoo(cat: Catalog, steps: int = 60, seed: int = 0, log: Callable[[str], None] = print) -> list[ModelEntry]:
    """Returns [base, *fine-tunes, merge] as registered (or reused: the same demo again is cached)."""
    log(f"pretraining demo-llama on {', '.join(PRETRAIN)} sources ({steps} steps)")
    base = run_operator(cat, "demo.pretrain", [], {"data": PRETRAIN, "steps": steps, "seed": seed, "lr": 3e-3,
                                                   "config": DEMO_CONFIG}, "demo-llama", tags=["demo"]).entry
    made = [base]
    for i, (suffix, pkgs) in enumerate(FINETUNES.items()):
        log(f"fine-tuning demo-llama-{suffix} on {', '.join(pkgs)} sources ({steps // 2} steps)")
        params = {"data": pkgs, "steps": steps // 2, "seed": seed + 1 + i, "lr": 1e-3}
        made.append(run_operator(cat, "demo.finetune", [Parent(base.id, "base")], params, f"demo-llama-{suffix}",
                                 tags=["demo"]).entry)
    log("merging the fine-tunes with TIES (merge.ties, density 0.5)")
    merged = run_operator(
        cat, "merge.ties", [Parent(base.id, "base")] + [Parent(m.id, "input", 0.5) for m in made[1:]],
        {"parameters": {"density": 0.5}, "model_parameters": [{"weight": 0.5}] * (len(made) - 1)},
        "demo-llama-ties", tags=["demo"])
    made.append(merged.entry)
    return made
