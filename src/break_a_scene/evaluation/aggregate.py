"""Gather every trial's rows under an evaluation folder into the comparison: a table (mean and 95% CI per
method and metric), the paper's figure (prompt similarity x vs identity similarity y, Pareto front marked)
and a breakdown by the number of concepts in the prompt.

Intervals: the rows of one (scene, training seed) are averaged first; the bootstrap resamples those units,
since images of one trained model are not independent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from break_a_scene.errors import UserInputError
from break_a_scene.evaluation.rows import META, OPTIONAL_META, ROWS_FILE, read_rows_file
from break_a_scene.evaluation.runner import FAILED_FILE
from break_a_scene.evaluation.splits import rows_split, split_line
from break_a_scene.evaluation.stats import mean_ci, paired_difference
from break_a_scene.inputs import read_json

AXES = {"paper": ("prompt_similarity", "identity_similarity"), "toyworld": ("prompt_following", "identity")}
# the paper's columns and ours under the names later papers report them with (docs/evaluation.md)
SUCCESSOR_NAMES = {"prompt_similarity": "CLIP-T", "clip_i": "CLIP-I", "identity_similarity": "DINO-I",
                   "dreamsim": "DreamSim", "detect_compare": "D&C-DS"}


def load_rows(out_dir: str | Path) -> list[dict]:
    rows = []
    for path in sorted(Path(out_dir).rglob(ROWS_FILE)):
        rows.extend(read_rows_file(path))
    return rows


def load_failures(out_dir: str | Path) -> list[dict]:
    return [read_json(p, "failure record") for p in sorted(Path(out_dir).rglob(FAILED_FILE))]


def metric_names(rows: list[dict]) -> list[str]:
    return [key for key in rows[0] if key not in META | OPTIONAL_META] if rows else []


def unit_means(rows: list[dict], metric: str) -> dict[tuple[str, str], float]:
    """One mean per (scene, training seed): images of one trained model are not independent."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        value = float(row[metric]) if row[metric] not in ("", None) else float("nan")
        groups.setdefault((row["scene"], row["train_seed"]), []).append(value)
    return {unit: float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan") for unit, v in groups.items()}


def summarize(rows: list[dict], metrics: list[str]) -> dict[str, dict]:
    """{method: {"images": n, "units": u, metric: (mean, low, high), ...}}, methods in first-seen order."""
    table: dict[str, dict] = {}
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method]
        table[method] = {"images": len(mine), "units": len({(r["scene"], r["train_seed"]) for r in mine}),
                         **{m: mean_ci(list(unit_means(mine, m).values())) for m in metrics}}
    return table


def paired_differences(rows: list[dict], reference: str, metrics: list[str]) -> dict[str, dict]:
    """{method: {metric: (mean, low, high, units)}}: each other method minus `reference`, paired by (scene,
    training seed), with a bootstrap 95% interval over the pairs."""
    mine = {m: [r for r in rows if r["method"] == m] for m in dict.fromkeys(r["method"] for r in rows)}
    base = {metric: unit_means(mine[reference], metric) for metric in metrics}
    return {method: {metric: paired_difference(base[metric], unit_means(theirs, metric)) for metric in metrics}
            for method, theirs in mine.items() if method != reference}


def paired_table(differences: dict[str, dict], reference: str, metrics: list[str]) -> str:
    lines = [f"| method - {reference} | pairs | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 2) + "|"]
    for method, stats in differences.items():
        pairs = max(s[3] for s in stats.values())
        lines.append(f"| {method} | {pairs} | " + " | ".join(_cell(stats[m][:3], signed=True) for m in metrics) + " |")
    return "\n".join(lines)


def by_concepts(rows: list[dict], metrics: list[str]) -> dict[str, dict[int, dict]]:
    """The same table per number of concepts in the prompt."""
    counts = sorted({int(row["concepts"]) for row in rows})
    return {k: summarize([row for row in rows if int(row["concepts"]) == k], metrics) for k in counts}


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Methods no other method beats on both axes (higher is better on both)."""
    return [m for m, (x, y) in points.items()
            if not any(ox >= x and oy >= y and (ox, oy) != (x, y) for o, (ox, oy) in points.items() if o != m)]


def _cell(stats: tuple[float, float, float], signed: bool = False) -> str:
    """Mean [low, high]; `signed` shows the sign, for differences."""
    mean, low, high = stats
    fmt = "+.3f" if signed else ".3f"
    return "nan" if mean != mean else f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def markdown_table(table: dict[str, dict], metrics: list[str]) -> str:
    lines = ["| method | images | units | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 3) + "|"]
    for method, stats in table.items():
        lines.append(f"| {method} | {stats['images']} | {stats['units']} | "
                     + " | ".join(_cell(stats[m]) for m in metrics) + " |")
    return "\n".join(lines)


def label_offsets(points: dict[str, tuple[float, float]], widths: dict[str, float]) -> dict[str, int]:
    """Each label's vertical offset, in points: 5 above its marker, stepped down a line while it would come within
    2 pt of a label already placed (two methods with the same means would otherwise print one name over the
    other). `points` are the markers' positions on the page and `widths` the labels' widths, both in points."""
    placed: list[tuple[float, float, float]] = []  # left, right, bottom of each label
    offsets = {}
    for method, (px, py) in sorted(points.items(), key=lambda item: (-item[1][1], item[1][0])):
        left, right, dy = px + 5, px + 5 + widths[method], 5
        while any(left < hi + 2 and lo - 2 < right and abs(py + dy - bottom) < 10 for lo, hi, bottom in placed):
            dy -= 11
        offsets[method] = dy
        placed.append((left, right, py + dy))
    return offsets


def plot(table: dict[str, dict], x: str, y: str, path: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties

    points = {m: (s[x][0], s[y][0]) for m, s in table.items() if s[x][0] == s[x][0] and s[y][0] == s[y][0]}
    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for method, (px, py) in points.items():
        stats = table[method]
        xerr, yerr = [[px - stats[x][1]], [stats[x][2] - px]], [[py - stats[y][1]], [stats[y][2] - py]]
        ax.errorbar(px, py, xerr=xerr, yerr=yerr, fmt="o", capsize=3,
                    color="tab:red" if method in front else "tab:blue")
    fig.tight_layout()
    fig.canvas.draw()  # settles the axis limits, so that the markers' page positions are final
    renderer, font, to_points = fig.canvas.get_renderer(), FontProperties(size=8), 72 / fig.dpi
    on_page = {m: tuple(ax.transData.transform(p) * to_points) for m, p in points.items()}
    widths = {m: renderer.get_text_width_height_descent(m, font, ismath=False)[0] * to_points for m in points}
    for method, dy in label_offsets(on_page, widths).items():
        ax.annotate(method, points[method], textcoords="offset points", xytext=(5, dy), fontsize=8)
    ordered = sorted((points[m] for m in front))
    if len(ordered) > 1:
        ax.plot(*zip(*ordered), "--", color="tab:red", linewidth=1, label="Pareto front")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel(f"{x} (prompt following)")
    ax.set_ylabel(f"{y} (identity)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return front


def aggregate(out_dir: str | Path, x: str | None = None, y: str | None = None, reference: str | None = None) -> Path:
    """Write <out_dir>/aggregate/{table.md, table.json, by_concepts.md, figure.png} and, when the rows have
    `reference` (break_a_scene when not given) and another method, paired.md (each method minus it, paired by
    unit); returns that folder."""
    out_dir = Path(out_dir)
    rows = load_rows(out_dir)
    failures = load_failures(out_dir)
    if not rows:
        raise UserInputError(f"no {ROWS_FILE} under '{out_dir}': run bas-evaluate first "
                             f"({len(failures)} failed trials recorded).")
    metrics = metric_names(rows)
    world = "paper" if "prompt_similarity" in metrics else "toyworld"
    x, y = x or AXES[world][0], y or AXES[world][1]
    for axis in (x, y):
        if axis not in metrics:
            raise UserInputError(f"metric '{axis}' is not in the rows; they have {metrics}.")
    methods = sorted({row["method"] for row in rows})
    if reference is not None and reference not in methods:
        raise UserInputError(f"reference method '{reference}' is not in the rows; they have {methods}.")
    reference = reference or "break_a_scene"
    split_name = rows_split(out_dir, rows)
    split = split_line(split_name, rows)
    table = summarize(rows, metrics)
    report = out_dir / "aggregate"
    report.mkdir(exist_ok=True)
    front = plot(table, x, y, report / "figure.png")
    text = [split, "", markdown_table(table, metrics), "", f"Pareto front ({x} vs {y}): {', '.join(front)}"]
    named = [f"{column} = {name}" for column, name in SUCCESSOR_NAMES.items() if column in metrics]
    if named:
        text += ["", "As the successors (DreamBooth, MagicTailor, MuDI) name them: " + "; ".join(named) + "."]
    if failures:
        text += ["", f"{len(failures)} failed trials:"]
        text += [f"- {f['method']} / {Path(f['scene']).name} / seed {f['train_seed']}: {f['error']}" for f in failures]
    (report / "table.md").write_text("\n".join(text) + "\n")
    (report / "table.json").write_text(json.dumps({"split": split_name, "metrics": metrics, "x": x,
                                                   "y": y, "pareto_front": front,
                                                   "failed_trials": len(failures), "methods": table}, indent=1))
    if reference in table and len(table) > 1:
        differences = paired_differences(rows, reference, metrics)
        (report / "paired.md").write_text(
            f"{split}\n\nEach method minus {reference}, paired by (scene, training seed); bootstrap 95% intervals "
            f"over the pairs.\n\n{paired_table(differences, reference, metrics)}\n")
    breakdown = [f"## {k} concept{'s' if k > 1 else ''} in the prompt\n\n{markdown_table(t, metrics)}\n"
                 for k, t in by_concepts(rows, metrics).items()]
    (report / "by_concepts.md").write_text("\n".join([split + "\n", *breakdown]))
    return report
