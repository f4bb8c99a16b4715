"""`ttscale report RUN_DIR...`: one self-contained HTML page (tables, embedded plots and, for a
chosen problem, the search tree a beam search / DVTS / particle filter built: every step a
node with its score, kept versus pruned, the final pick marked)."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATUS_COLOURS = {
    "chosen": "#d62728",
    "final": "#2ca02c",
    "expanded": "#1f77b4",
    "pruned": "#bbbbbb",
    "duplicate": "#dddddd",
    "resampled-away": "#ff7f0e",
    "lookahead": "#9467bd",
}


def load_trace(run_dir: Path, problem_id: str | None = None, strategy: str | None = None) -> tuple[str, list]:
    """(key, trace) of the first search in a run that matches the problem and strategy."""
    path = run_dir / "traces.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no traces.jsonl (search traces are written by eval runs)")
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        _, pid, strat, *_ = rec["key"].split("|")
        if rec["trace"] and (problem_id in (None, pid)) and (strategy in (None, strat)):
            return rec["key"], rec["trace"]
    raise ValueError(f"no search trace for problem {problem_id or 'any'} and strategy {strategy or 'any'}")


def tree_svg(trace: Sequence[dict[str, Any]], width_per_level: int = 150, row_height: int = 22) -> str:
    """The search tree, root on the left, one column per step, one row per leaf."""
    children: dict[int | None, list[int]] = {}
    for node in trace:
        children.setdefault(node["parent"], []).append(node["id"])
    y: dict[int, float] = {}
    depth: dict[int, int] = {}
    rows = 0

    def place(node_id: int, d: int) -> float:
        nonlocal rows
        depth[node_id] = d
        kids = children.get(node_id, [])
        if not kids:
            y[node_id] = rows
            rows += 1
        else:
            ys = [place(k, d + 1) for k in kids]
            y[node_id] = (min(ys) + max(ys)) / 2
        return y[node_id]

    for root in children.get(None, []):
        place(root, 0)
    w = (max(depth.values(), default=0) + 1) * width_per_level + 40
    h = max(rows, 1) * row_height + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="10">'
    ]

    def xy(node_id: int) -> tuple[float, float]:
        return 20 + depth[node_id] * width_per_level, 10 + y[node_id] * row_height + row_height / 2

    for node in trace:
        if node["parent"] is not None and node["id"] in y:
            (x1, y1), (x2, y2) = xy(node["parent"]), xy(node["id"])
            dash = ' stroke-dasharray="3,3"' if node["status"] == "lookahead" else ""
            parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#999"{dash}/>')
    for node in trace:
        if node["id"] not in y:
            continue
        x, yy = xy(node["id"])
        colour = STATUS_COLOURS.get(node["status"], "#1f77b4")
        score = node.get("score")
        label = "root" if node["parent"] is None else (f"{score:.2f}" if score is not None else "")
        tip = html.escape(f"[{node['status']}] score={score} finish={node.get('finish_reason')}\n{node['step']}")
        radius = 7 if node["status"] == "chosen" else 5
        parts.append(
            f'<g><title>{tip}</title><circle cx="{x}" cy="{yy}" r="{radius}" fill="{colour}"/>'
            f'<text x="{x + 8}" y="{yy + 3}">{label}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _table(points: Sequence[dict[str, Any]]) -> str:
    ns = sorted({p["n"] for p in points})
    names = list(dict.fromkeys(p["strategy"] for p in points))
    cell = {(p["strategy"], p["n"]): p for p in points}
    head = "".join(f"<th>n={n}</th>" for n in ns)
    rows = []
    for s in names:
        cells = []
        for n in ns:
            p = cell.get((s, n))
            cells.append(
                f"<td>{100 * p['accuracy']:.1f} <small>[{100 * p['ci_low']:.0f}-{100 * p['ci_high']:.0f}]"
                f"<br>{p['generated_tokens']:.0f} tok</small></td>"
                if p
                else "<td></td>"
            )
        rows.append(f"<tr><th>{html.escape(s)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>strategy</th>{head}</tr>{''.join(rows)}</table>"


def build_report(run_dirs: Sequence[Path], tree: tuple[Path, str | None, str | None] | None = None) -> str:
    sections = []
    for d in run_dirs:
        # a run directory (its default summary) or one named summary in it (DIR/NAME.json)
        summary_path = d if d.suffix == ".json" else d / "summary.json"
        summary = json.loads(summary_path.read_text())
        ident = summary["identity"]
        status = "" if summary.get("complete", True) else " (PARTIAL)"
        c = summary["compute_total"]
        named = d.suffix == ".json" and d.name != "summary.json"
        plot = d.with_suffix(".png") if named else summary_path.parent / "plot.png"
        img = (
            f'<img src="data:image/png;base64,{base64.b64encode(plot.read_bytes()).decode()}" width="900">'
            if plot.exists()
            else ""
        )
        sections.append(
            f"<h2>{html.escape(str(d))}{status}</h2>"
            f"<p>{html.escape(ident['model'])} on {html.escape(ident['dataset'])}, {summary['problems']} problems, "
            f"seed {ident['seed']}, sampling {html.escape(json.dumps(ident['sampling']))}, verifier "
            f"{html.escape(summary['scorer'])}/{html.escape(summary['aggregation'])}. Accuracy in %, 95% interval, "
            f"generated tokens per problem.</p>{_table(summary['points'])}"
            f"<p>Compute of the whole run: {c['generated_tokens']:,} generated tokens, {c['prompt_tokens']:,} prompt "
            f"tokens computed, {c['cached_prompt_tokens']:,} served from cache, {c['verifier_tokens']:,} verifier "
            f"tokens, {c['wall_time']:.0f} s, {c['flops']:.3g} FLOPs.</p>{img}"
        )
    if tree is not None:
        key, trace = load_trace(*tree)
        legend = " ".join(f'<span style="color:{c}">&#9679; {s}</span>' for s, c in STATUS_COLOURS.items())
        sections.append(
            f"<h2>Search tree: {html.escape(key)}</h2><p>Each node is a step with its verifier score (hover for the "
            f"text). {legend}</p><div style='overflow:auto'>{tree_svg(trace)}</div>"
        )
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f4f4f4}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>ttscale report</title><style>{style}</style></head>"
        f"<body><h1>ttscale report</h1>{''.join(sections)}</body></html>"
    )
