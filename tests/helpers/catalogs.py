"""Catalogs with lineage for the read-path tests: a small one written through the real API
(adds, runs with weights, tags, metrics), and a long chain bulk-inserted into the
catalog's own tables (1,000 `Catalog.add` calls would take minutes)."""
from __future__ import annotations

from pathlib import Path

import torch

from zoo import Catalog, Parent, RunRecord, save_tensors

LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 8,
                "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                "num_key_value_heads": 1, "vocab_size": 12}


def _weights(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {"model.embed_tokens.weight": torch.randn(12, 8, generator=gen),
            "model.norm.weight": torch.randn(8, generator=gen)}


def lineage_zoo(root: Path, target: str | None = None) -> Catalog:
    """base -> ft-a, ft-b (added with parents); ft-a + ft-b -> soup (a run, weights 0.25 /
    0.75) -> soup-child (a run without weights), soup@2 (a second version); an unrelated
    `lonely`; tags and metrics on some. In `target` (a URL), else ROOT/zoo.db."""
    cat = Catalog(target or root / "zoo.db", store=root / "store")
    for i, (name, parents, tags) in enumerate((("base", [], ["b", "a"]), ("ft-a", [Parent("base", "base")], ["a"]),
                                              ("ft-b", [Parent("base", "base")], []), ("lonely", [], ["x"]))):
        path = save_tensors(root / "src" / name, _weights(i), config=LLAMA_CONFIG).path
        cat.add(path, name=name, parents=parents, tags=tags)
    cat.set_metrics("ft-a", {"acc": 0.5, "loss": 1.25})
    for name, seed, run, inputs in (
            ("soup", 10, RunRecord("merge.linear", "1", {"weights": [0.25, 0.75]}, seconds=0.5),
             [Parent("ft-a", "input", 0.25), Parent("ft-b", "input", 0.75)]),
            ("soup-child", 11, RunRecord("train.finetune", "2", {"steps": 3}), [Parent("soup", "base")]),
            ("soup", 12, RunRecord("merge.linear", "1", {"weights": [0.5, 0.5]}),
             [Parent("ft-a", "input", 0.5), Parent("ft-b", "input", 0.5)])):
        written = save_tensors(cat.incoming_path(), _weights(seed), config=LLAMA_CONFIG)
        cat.register(written, name, run=run, inputs=inputs, tags=["made"])
    return cat


def chain_catalog(path: Path, depth: int, below: int) -> tuple[Catalog, str]:
    """A chain of `depth + 1 + below` models (`link-000000` first, each the child of the one
    before); every 100th link also has the link two back as a parent (a diamond), link 7
    has its parent twice (a second edge, role `extra`), and every other link was made by a
    recorded run. Returns the catalog and the ref of link `depth`, which has `depth`
    ancestors and `below` descendants."""
    from sqlalchemy import insert

    from zoo.catalog.tables import LineageEdge, ModelEntry, Run

    cat = Catalog(path, store=path.parent / "store")
    n = depth + 1 + below
    models = [{"id": k + 1, "name": f"link-{k:06d}", "version": 1, "family": "llama" if k % 3 else None,
               "architecture": "LlamaForCausalLM", "num_params": 1000 + k, "dtype": "float32", "bytes": 4000 + 4 * k,
               "location": f"/nowhere/link-{k}", "path": None, "owned": False, "digest": f"{k:064x}",
               "config": LLAMA_CONFIG} for k in range(n)]
    runs = [{"id": k + 1, "operator": "train.finetune", "operator_version": "1", "params": {"step": k},
             "inputs": [], "outputs": [{"id": k + 1, "ref": f"link-{k:06d}@1", "digest": ""}]}
            for k in range(1, n) if k % 2]
    edges = []
    for k in range(1, n):
        run = k + 1 if k % 2 else None
        edges.append({"parent_id": k, "child_id": k + 1, "role": "base", "weight": None, "run_id": run})
        if k % 100 == 0:
            edges.append({"parent_id": k - 1, "child_id": k + 1, "role": "input", "weight": 0.5, "run_id": run})
        if k == 7:
            edges.append({"parent_id": k, "child_id": k + 1, "role": "extra", "weight": 2.0, "run_id": run})
    with cat.engine.begin() as conn:
        for table, rows in ((ModelEntry, models), (Run, runs), (LineageEdge, edges)):
            conn.execute(insert(table.__table__), rows)
    cat.refresh_listings()
    return cat, f"link-{depth:06d}@1"
