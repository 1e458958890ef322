"""Run under `torchrun --nproc_per_node 2`: train a tiny stitched network for a few steps
and record, per process, the world size and a digest of the trained weights."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch


def digest_of(net) -> str:
    return hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in net.state_dict().values())).hexdigest()


def main(out: Path) -> None:
    torch.set_num_threads(1)
    from accelerate import PartialState

    from stitching.configs import snnet_v1
    from stitching.lsinit import init_stitches
    from stitching.snnet import SNNetParams, build_network, train_network
    from zoo.families import PRESETS, get_family
    from zoo.tasks import get_task

    fam, task = get_family("vit"), get_task("digits")
    anchors = []
    for i, preset in enumerate(("vit-ti", "vit-s")):
        cfg = {k: v for k, v in PRESETS[preset].items() if k != "family"}
        torch.manual_seed(i)
        anchors.append((i, fam.build({**cfg, "architectures": ["ViTForImageClassification"]}), cfg))
    net = build_network(fam, anchors, snnet_v1([4, 4]))
    x, _ = task.split("train")
    init_stitches(net, {"pixel_values": x[:32]})
    before = digest_of(net)
    p = SNNetParams(task="digits", steps=4, batch_size=8, lr=1e-3)
    train_network(net, task, anchors[0][2], p)
    state = PartialState()
    record = {"rank": state.process_index, "world": state.num_processes, "type": str(state.distributed_type),
              "before": before, "digest": digest_of(net)}
    (out / f"rank{state.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
