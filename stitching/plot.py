"""The picture of a stitched network: every configuration's score against its FLOPs,
the anchors marked, the Pareto front joined (the stored one, chosen on the validation
split, when the network has it)."""
from __future__ import annotations

from pathlib import Path

from .format import StitchConfig

from .measure import pareto_front

COLORS = {"SL": "tab:blue", "LS": "tab:orange", "LSL": "tab:green", "SLS": "tab:purple"}


def pareto_plot(configs: list[StitchConfig], metric: str, path: str | Path, title: str = "",
                anchor_names: list[str] | None = None, higher_is_better: bool = True) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sign = 1 if higher_is_better else -1
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for kind, color in COLORS.items():
        pts = [(c.stats["flops"] / 1e6, c.stats[metric]) for c in configs if c.kind == kind and metric in c.stats]
        if pts:
            ax.scatter(*zip(*pts), s=14, color=color, alpha=0.7, label=f"stitched {kind} ({len(pts)})")
    anchors = [c for c in configs if c.kind == "anchor"]
    ax.scatter([c.stats["flops"] / 1e6 for c in anchors], [c.stats[metric] for c in anchors], marker="*", s=180,
               color="black", zorder=3, label="anchors")
    for i, c in enumerate(anchors):
        name = anchor_names[i] if anchor_names and i < len(anchor_names) else f"anchor {c.id}"
        ax.annotate(name, (c.stats["flops"] / 1e6, c.stats[metric]), textcoords="offset points", xytext=(6, -10),
                    fontsize=8)
    by_id = {c.id: c for c in configs}
    flagged = [c for c in configs if c.stats.get("pareto")]  # the stored front, selected on validation
    front = ([c.id for c in sorted(flagged, key=lambda c: c.stats["flops"])] if flagged else
             pareto_front([(c.id, c.stats["flops"], sign * c.stats[metric]) for c in configs if metric in c.stats]))
    ax.plot([by_id[i].stats["flops"] / 1e6 for i in front], [by_id[i].stats[metric] for i in front], color="red",
            lw=1, label="Pareto front (selected on validation)" if flagged else "Pareto front")
    ax.set_xlabel("MFLOPs per example")
    ax.set_ylabel(metric)
    ax.set_title(title or "stitched configurations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
