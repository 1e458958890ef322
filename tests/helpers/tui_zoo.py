"""A small, deterministic catalog for the TUI tests and its screenshots: fixed names,
weights, creation times and run times, files in a store whose path is never drawn.

    base ─┬─ ft-a ─┬─ merged ── grand        (merged: run merge.linear of ft-a and ft-b,
          └─ ft-b ─┘                          grand: a training run with long params)
    vit-small                                 (no lineage)

The first four are a diamond: one root, two children of it, and a merge of those two.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

FIXED_TIME = "2025-01-02 03:04:05.000000"

LLAMA = {
    "model.embed_tokens.weight": (64, 16),
    "model.layers.0.input_layernorm.weight": (16,),
    "model.layers.0.self_attn.q_proj.weight": (16, 16),
    "model.layers.0.self_attn.k_proj.weight": (8, 16),
    "model.layers.0.self_attn.v_proj.weight": (8, 16),
    "model.layers.0.self_attn.o_proj.weight": (16, 16),
    "model.layers.0.post_attention_layernorm.weight": (16,),
    "model.layers.0.mlp.gate_proj.weight": (32, 16),
    "model.layers.0.mlp.up_proj.weight": (32, 16),
    "model.layers.0.mlp.down_proj.weight": (16, 32),
    "model.norm.weight": (16,),
    "lm_head.weight": (64, 16),
}
LLAMA_CONFIG = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16,
                "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                "num_key_value_heads": 1, "vocab_size": 64}
VIT = {"vit.embeddings.patch_embeddings.projection.weight": (16, 1, 2, 2), "classifier.weight": (10, 16)}
VIT_CONFIG = {"model_type": "vit", "architectures": ["ViTForImageClassification"], "hidden_size": 16,
              "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 8,
              "patch_size": 2}
# a run whose params do not fit on one 80-column line: the lineage view must wrap them
TRAIN_PARAMS = {"task": "char-lm", "steps": 200, "learning_rate": 0.0003, "schedule": "cosine",
                "warmup_steps": 20, "batch_size": 32, "weight_decay": 0.01, "seed": 0}


def weights(shapes: dict, seed: int) -> dict:
    """Exactly reproducible values (integer arithmetic, one IEEE division)."""
    import torch

    out = {}
    for i, (name, shape) in enumerate(shapes.items()):
        n = 1
        for s in shape:
            n *= s
        ints = (torch.arange(n, dtype=torch.int64) * (7 + i) + 13 * seed) % 97 - 48
        out[name] = (ints.to(torch.float32) / 1000).reshape(shape)
    return out


def _write(path: Path, shapes: dict, config: dict, seed: int) -> Path:
    from zoo import save_tensors

    save_tensors(path, weights(shapes, seed), config=config)
    return path


def build_tui_zoo(root: Path) -> Path:
    """Write the catalog above into `root` (catalog.db, store/, src/); returns `root`."""
    from zoo import Catalog, Parent, RunRecord, save_tensors

    cat = Catalog(root / "catalog.db", store=root / "store")
    src = root / "src"
    cat.add(_write(src / "base", LLAMA, LLAMA_CONFIG, 0), name="base", copy=True, tags=["base", "llama-base"])
    cat.add(_write(src / "ft-a", LLAMA, LLAMA_CONFIG, 1), name="ft-a", copy=True, tags=["ft"],
            parents=[Parent("base", "base")])
    cat.add(_write(src / "ft-b", LLAMA, LLAMA_CONFIG, 2), name="ft-b", copy=True, tags=["ft"],
            parents=[Parent("base", "base")])
    a, b = cat.open("ft-a"), cat.open("ft-b")
    merged = save_tensors(cat.incoming_path(), {n: (a.get(n) + b.get(n)) / 2 for n in a.names()},
                          config=LLAMA_CONFIG)
    cat.register(merged, "merged", run=RunRecord("merge.linear", "1", {"weights": [0.5, 0.5]}, seconds=0.25),
                 inputs=[Parent("ft-a@1", "input", 0.5), Parent("ft-b@1", "input", 0.5)], tags=["merge"])
    grand = save_tensors(cat.incoming_path(), weights(LLAMA, 3), config=LLAMA_CONFIG)
    cat.register(grand, "grand", run=RunRecord("zoo.train", "1", TRAIN_PARAMS, seconds=1.5),
                 inputs=[Parent("merged@1", "base")], tags=["ft"])
    cat.add(_write(src / "vit-small", VIT, VIT_CONFIG, 4), name="vit-small", copy=True, tags=["vision"])
    cat.set_metrics("base", {"acc": 0.5, "loss": 1.25})
    cat.set_metrics("ft-a", {"acc": 0.625})
    cat.set_metrics("merged", {"acc": 0.75})
    cat.engine.dispose()
    with sqlite3.connect(root / "catalog.db") as con:  # fixed times: screenshots must not vary
        con.execute("UPDATE models SET created_at = ?, listing = NULL", (FIXED_TIME,))
        con.execute("UPDATE runs SET started_at = ?", (FIXED_TIME,))
    Catalog(root / "catalog.db", store=root / "store").refresh_listings()
    return root


def copy_catalog(src_root: Path, dst: Path) -> Path:
    """A private copy of the catalog database (actions may change it); the store is shared."""
    db = dst / "catalog.db"
    with sqlite3.connect(src_root / "catalog.db") as s, sqlite3.connect(db) as d:
        s.backup(d)
    return db


def make_app(root: Path, workdir: Path):
    """A ZooApp on a private copy of the catalog in `root`, dark theme (screenshots are in
    colour), and `app.notes`: every notification as (message, severity)."""
    from tui.app import ZooApp
    from zoo import Catalog

    app = ZooApp(Catalog(copy_catalog(root, workdir), store=root / "store"))
    app.theme = "textual-dark"
    app.notes = []
    notify = app.notify

    def recording_notify(message, *args, **kwargs):
        app.notes.append((str(message), kwargs.get("severity", "information")))
        return notify(message, *args, **kwargs)

    app.notify = recording_notify
    return app


def screen_lines(app) -> list[str]:
    """The screen as plain text, one string per row: what a user sees without colour."""
    return [strip.text for strip in app.screen._compositor.render_strips()]
