"""Run under `torchrun --nproc_per_node 2`: the shared training loop as `zoo train`, the
Learngene Pool distillation and the weight generator use it, a few steps each; every
process records the world size and a digest of each trained model."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch


def digest(module) -> str:
    return hashlib.sha256(b"".join(t.detach().float().numpy().tobytes() for t in module.state_dict().values())).hexdigest()


def main(out: Path) -> None:
    torch.set_num_threads(1)
    from accelerate import PartialState

    from generators.wgen.generator import WeightGenerator
    from generators.wgen.layout import WeightLayout
    from stitching.learngene_pool import PoolDistiller, PoolObjective, aux_config
    from zoo.families import PRESETS, get_family
    from zoo.tasks import get_task
    from zoo.training import TrainParams, train_model

    fam, task = get_family("vit"), get_task("digits")
    cfg = {k: v for k, v in PRESETS["vit-ti"].items() if k != "family"}
    torch.manual_seed(0)
    model = fam.build({**cfg, "architectures": ["ViTForImageClassification"]})
    before = {"train": digest(model)}
    model, _ = train_model(model, task, cfg, TrainParams(task="digits", steps=3, batch_size=8))
    after = {"train": digest(model)}

    torch.manual_seed(1)
    teacher = fam.build({**cfg, "architectures": ["ViTForImageClassification"]})
    aux = [aux_config(fam, cfg, 12, 2)]
    distiller = PoolDistiller(fam, [fam.build(c) for c in aux], [12], cfg["hidden_size"], [2], cfg["num_hidden_layers"])
    before["pool"] = digest(distiller)
    distiller, _ = train_model(distiller, PoolObjective(task, teacher, fam, 0.5, 1.0), cfg,
                               TrainParams(task="digits", steps=3, batch_size=8))
    after["pool"] = digest(distiller)

    torch.manual_seed(2)
    gen = WeightGenerator(WeightLayout(["w"], [(64,)], chunk=16), latent=4, hidden=32, depth=1)
    before["generator"] = digest(gen)
    gen.fit_vae(torch.randn(16, 64, generator=torch.Generator().manual_seed(0)), steps=3, batch_size=4)
    after["generator"] = digest(gen)

    state = PartialState()
    (out / f"rank{state.process_index}.json").write_text(json.dumps(
        {"world": state.num_processes, "before": before, "after": after}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
