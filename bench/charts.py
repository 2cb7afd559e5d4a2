"""The report's ratio tables as bar charts (``python bench/compare.py --plot DIR``).

A function of plain rows, so that it can be tested without running a
benchmark: each row is a dict

    {"group": "conv fwd", "name": "LeNet conv1 b64", "peer": "torch",
     "target": 1.0 or None, "ratios": {threads: peer time / fastcnn time, or None}}

(compare.chart_rows builds them from the report's results). One chart per
group: a bar per row and thread count, the ratio on a log axis (above 1:
fastcnn faster), a line at 1.0 and one at each target BENCHMARKS.md sets.
Drawn on a matplotlib Figure with the Agg canvas (headless, no pyplot).
"""
import os
import re

__all__ = ["ratio_chart", "write_ratio_charts"]

DPI = 90


def ratio_chart(rows, thread_counts, group):
    """A Figure: the ratios of ``rows`` (one group), bars per thread count."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    names = [row["name"] + ("" if row["peer"] == "torch" else f" vs {row['peer']}")
             for row in rows]
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 3), 4.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(thread_counts)
    values = []
    for j, t in enumerate(thread_counts):
        xs, ys = [], []
        for i, row in enumerate(rows):
            ratio = row["ratios"].get(t)
            if ratio:
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(ratio)
        values += ys
        bars = ax.bar(xs, ys, width, label=f"{t} thread{'s' if t > 1 else ''}")
        ax.bar_label(bars, labels=[f"{y:.2f}" for y in ys], fontsize=7, padding=1)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=1, label="1.0: as fast as the peer")
    targets = sorted({row["target"] for row in rows if row["target"] not in (None, 1.0)})
    for target in targets:
        which = [n for n, row in zip(names, rows) if row["target"] == target]
        ax.axhline(target, color="tab:red", linestyle="--", linewidth=1,
                   label=f"target {target:g}" + (f" ({', '.join(which)})"
                                                 if len(which) < len(rows) else ""))
    if any(row["target"] == 1.0 for row in rows):
        ax.lines[0].set_label("1.0: as fast as the peer (target)")
    low = min(values + [1.0] + targets)
    high = max(values + [1.0] + targets)
    ax.set_ylim(low / 1.6, high * 1.6)
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _: ""))
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    if group == "memory":
        ax.set_ylabel("peer peak RSS / fastcnn peak RSS (log)")
        ax.set_title(f"{group}: peak memory against the peer (above 1: fastcnn smaller)",
                     fontsize=10)
    else:
        ax.set_ylabel("peer time / fastcnn time (log)")
        ax.set_title(f"{group}: speed against the peer (above 1: fastcnn faster)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def write_ratio_charts(rows, thread_counts, directory):
    """One PNG per group with a measured ratio, named after the group
    (``conv fwd`` -> ``conv_fwd.png``), in report order; returns the paths."""
    groups = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    os.makedirs(directory, exist_ok=True)
    paths = []
    for group, members in groups.items():
        measured = [row for row in members if any(row["ratios"].get(t) for t in thread_counts)]
        if not measured:
            continue
        path = os.path.join(os.fspath(directory), re.sub(r"\W+", "_", group).strip("_") + ".png")
        ratio_chart(measured, thread_counts, group).savefig(path, dpi=DPI)
        paths.append(path)
    return paths
