"""Run under `torchrun --nproc_per_node 2`: both processes run one operator with several
outputs on the same catalog; the main process registers them all once, the other drops
its copies. Every process records the entries it got back."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(root: Path) -> None:
    from accelerate import PartialState

    from zoo import Catalog, save_tensors
    from zoo.catalog import Parent
    from zoo.registry import InputSpec, Operator, OperatorParams, register
    from zoo.runner import OperatorOutput, run_operator

    class Params(OperatorParams):
        parts: int = 3

    def split(call):
        weight = call.checkpoint(0).get("w")
        outs = []
        for i in range(call.params.parts):
            target = call.new_output(f"part-{i}", detail={"part": i})
            outs.append(OperatorOutput(target.write_tensors({"w": weight * (i + 1)}), name=target.name))
        return outs

    register(Operator("ddp.split", "1", Params, split, default_role="source", inputs=(InputSpec("source"),)))
    state = PartialState(cpu=True)
    catalog = Catalog(root / "catalog.db", store=root / "store")
    if state.is_main_process:
        save_tensors(root / "src", {"w": torch.ones(4)})
        catalog.add(root / "src", "src")
    state.wait_for_everyone()
    result = run_operator(catalog, "ddp.split", [Parent("src", "source")], {})
    again = run_operator(catalog, "ddp.split", [Parent("src", "source")], {})
    (root / f"rank{state.process_index}.json").write_text(json.dumps(
        {"ids": [e.id for e in result.entries], "reused": [result.reused, again.reused],
         "again": [e.id for e in again.entries]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
