"""A select step's report: a Markdown table, a PNG of the metric against the cost (the kept
models joined in red: the Pareto front, or the one best) and the rows as JSON."""
from __future__ import annotations

import json
from pathlib import Path

COST_LABELS = {"params": "parameters", "flops": "FLOPs per example (forward)"}


def write_report(stem: Path, metric: str, rows: list[dict], cost: str = "params", prefix: str = "") -> None:
    """`rows`: {ref, metric, params, [flops], kept}; `prefix` is dropped from plot labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    costs = [c for c in COST_LABELS if all(c in r for r in rows)]
    lines = [f"| model | {' | '.join(costs)} | {metric} | kept |", "|---" * (len(costs) + 3) + "|"]
    lines += [f"| {r['ref']} | {' | '.join(f'{r[c]:,}' for c in costs)} | {r['metric']:.4f} | "
              f"{'yes' if r['kept'] else ''} |" for r in rows]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter([r[cost] for r in rows], [r["metric"] for r in rows], color="tab:blue", label="candidates")
    kept = sorted((r for r in rows if r["kept"]), key=lambda r: r[cost])
    ax.plot([r[cost] for r in kept], [r["metric"] for r in kept], "o-", color="red", label="kept")
    _label_points(ax, rows, cost, prefix)
    ax.set_xlabel(COST_LABELS[cost])
    ax.set_ylabel(metric)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"))
    plt.close(fig)
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=2))


def _label_points(ax, rows: list[dict], cost: str, prefix: str) -> None:
    """Name every point without overlaps: labels of points in one column are spread out
    vertically (at least 4% of the metric's range apart), joined to their points by a line."""
    from matplotlib.transforms import offset_copy

    beside = offset_copy(ax.transData, fig=ax.figure, x=14, units="points")  # data y, a little to the right
    values = [r["metric"] for r in rows]
    gap = 0.04 * ((max(values) - min(values)) or 1.0)
    columns: dict[int, list[dict]] = {}
    for r in rows:
        columns.setdefault(r[cost], []).append(r)
    for x, column in columns.items():
        placed = float("-inf")
        for r in sorted(column, key=lambda r: r["metric"]):
            placed = max(r["metric"], placed + gap)
            name = r["ref"][len(prefix):] if prefix and r["ref"].startswith(prefix) else r["ref"]
            ax.annotate(name, (x, r["metric"]), xytext=(x, placed), textcoords=beside, fontsize=7, va="center",
                        fontweight="bold" if r["kept"] else "normal",
                        arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
