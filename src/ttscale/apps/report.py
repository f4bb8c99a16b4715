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

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt

from ..evaluation.config import RecordKey
from ..evaluation.curves import matched_budget
from ..util.stats import paired_difference

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
    """(key, trace) of the first search in a run that matches the problem (its id, or a whole
    search key to tell apart runs with other budgets or verifiers) and strategy."""
    path = run_dir / "traces.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no traces.jsonl (search traces are written by eval runs)")
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = RecordKey.parse(rec["key"])
        if rec["trace"] and (problem_id in (None, key.problem_id, rec["key"])) and (strategy in (None, key.strategy)):
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


def _summary_path(d: Path) -> Path:
    """A run directory stands for its default summary; DIR/NAME.json is a named one."""
    return d if d.suffix == ".json" else d / "summary.json"


def run_label(summary: dict[str, Any]) -> str:
    """The model, the server that sampled it if one did, and "greedy" for a greedy run."""
    ident = summary["identity"]
    greedy = ident["sampling"].get("temperature", 1.0) <= 0
    engine = summary.get("engine") or {}
    via = f" via server {engine.get('model')}" if engine.get("kind") == "openai" else ""
    return f"{ident['model']}{via}{' greedy' if greedy else ''}"


def headline_points(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every curve point of every run, labelled with its model; a greedy run is one point
    (its single sample), the "+rule" variants are left out, the oracle is kept as a reference
    (some sample right: what a perfect pick reaches). A point that two
    views of one pool both hold (the same system, budget and figures) is listed once."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()

    def add(point: dict[str, Any]) -> None:
        key = (point["system"], point["n"], point["accuracy"], point["generated_tokens"])
        if key not in seen:
            seen.add(key)
            out.append(point)

    for summary in summaries:
        label = run_label(summary)
        for p in summary["points"]:
            if p["strategy"] == "oracle" and not label.endswith("greedy"):  # pass@N: what selection can reach
                add({**p, "system": f"{label} oracle (pass@N)"})
            if "+" in p["strategy"] or p["strategy"] == "oracle":
                continue
            if label.endswith("greedy"):
                if p["strategy"] != "pass@1":
                    continue
                add({**p, "system": label})
            elif p["strategy"] != "pass@1":
                add({**p, "system": f"{label} {p['strategy']}{_verifier(summary, p['strategy'])}"})
    return out


def _verifier(summary: dict[str, Any], strategy: str) -> str:
    """The verifier in a system's label, like " (probe/last)", for a strategy the run's
    verifier steered: two runs of one strategy under different verifiers stay apart.
    Compared points carry theirs already."""
    # self_refine picks its last answer, self_debug its last passing program
    if strategy in ("majority", "self_refine", "self_debug") or strategy.endswith(")"):
        return ""
    return f" ({summary['scorer']}/{summary['aggregation']})"


def against_baseline(points: Sequence[dict[str, Any]], baseline: dict[str, Any], seed: int = 0) -> None:
    """Each point's accuracy minus the baseline's, paired over the same problems, with a 95%
    bootstrap interval (as vs_baseline); summaries written before per-problem results were
    saved get none."""
    base = baseline.get("per_problem")
    for p in points:
        mine = p.get("per_problem")
        if base is None or mine is None or len(mine) != len(base) or p["system"] == baseline["system"]:
            continue
        p["vs_baseline"] = paired_difference(mine, base, seed)


def matching_budgets(points: Sequence[dict[str, Any]], baseline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For every system, the smallest budget whose accuracy reaches the baseline's ("n", None
    if none does) and its point closest to the baseline ("closest": the largest paired
    difference, when the runs saved per-problem results)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(points, key=lambda p: p["n"]):
        if p["system"] == baseline["system"]:
            continue
        m = out.setdefault(p["system"], {"n": None, "closest": None})
        if m["n"] is None and p["accuracy"] >= baseline["accuracy"]:
            m["n"] = p["n"]
        vs = p.get("vs_baseline")
        if vs and (m["closest"] is None or vs["difference"] > m["closest"]["difference"]):
            m["closest"] = {"n": p["n"], **vs}
    return out


def match_text(match: dict[str, Any]) -> str:
    reached = f"N = {match['n']}" if match["n"] else "not within the budgets run"
    c = match["closest"]
    if c is None:
        return reached
    return f"{reached}; closest at N = {c['n']}: {_points(c)}"


def _points(vs: dict[str, Any]) -> str:
    return f"{100 * vs['difference']:+.1f} points [{100 * vs['ci_low']:+.1f}, {100 * vs['ci_high']:+.1f}]"


def _vs_text(point: dict[str, Any]) -> str:
    return _points(point["vs_baseline"]) if "vs_baseline" in point else "–"


ROUND_STRATEGIES = ("self_debug", "self_refine")


def matched_tokens(points: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Each round strategy (self_debug, self_refine) against every pool system at matched
    tokens: at each of its budgets, the pool system's smallest budget that generated at least
    as many tokens per problem (so resampling is never given less), and the accuracy
    difference paired over problems with a 95% bootstrap interval."""
    systems: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        systems.setdefault(p["system"], []).append(p)
    rounds = [s for s in systems if any(f" {r}" in s for r in ROUND_STRATEGIES)]
    pools = [s for s in systems if s not in rounds and not s.endswith(("greedy", "(pass@N)"))]
    rows = []
    for r in rounds:
        for p in sorted(systems[r], key=lambda q: q["n"]):
            for other in pools:
                by_n = {q["n"]: q for q in systems[other]}
                n = matched_budget(p["generated_tokens"], [(m, q["generated_tokens"]) for m, q in by_n.items()])
                if n is None or p.get("per_problem") is None or by_n[n].get("per_problem") is None:
                    continue
                q = by_n[n]
                if len(p["per_problem"]) != len(q["per_problem"]):
                    continue
                rows.append(
                    {
                        "system": r,
                        "n": p["n"],
                        "tokens": p["generated_tokens"],
                        "against": other,
                        "against_n": q["n"],
                        "against_tokens": q["generated_tokens"],
                        **paired_difference(p["per_problem"], q["per_problem"], seed),
                    }
                )
    return rows


def matched_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| system | N | tokens | against | its N | its tokens | difference, paired [95% CI] |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['n']} | {r['tokens']:.0f} | {r['against']} | {r['against_n']} | "
            f"{r['against_tokens']:.0f} | {_points(r)} |"
        )
    return "\n".join(lines)


def headline_table(points: Sequence[dict[str, Any]], baseline: str) -> str:
    ran = any(p.get("executed_tests") for p in points)  # code: the tests each system ran, per problem
    lines = [
        f"| system | N | accuracy % [95% CI] | vs {baseline}, paired | generated tokens | FLOPs | seconds |"
        + (" tests run |" if ran else ""),
        "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if ran else ""),
    ]
    for p in points:
        vs = _vs_text(p)
        lines.append(
            f"| {p['system']} | {p['n']} | {100 * p['accuracy']:.1f} [{100 * p['ci_low']:.0f}-{100 * p['ci_high']:.0f}]"
            f" | {vs} | {p['generated_tokens']:.0f} | {p.get('flops', 0.0):.3g} | {p.get('wall_time', 0.0):.1f} |"
            + (f" {p.get('executed_tests', 0.0):.1f} |" if ran else "")
        )
    return "\n".join(lines)


def headline_plot(points: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against FLOPs per problem: greedy runs as horizontal reference lines."""
    fig, ax = plt.subplots(figsize=(9, 5))
    for system in dict.fromkeys(p["system"] for p in points):
        pts = sorted((p for p in points if p["system"] == system), key=lambda p: p["n"])
        xs, ys = [p.get("flops", 0.0) for p in pts], [100 * p["accuracy"] for p in pts]
        if system.endswith("greedy"):
            ax.axhline(ys[0], linestyle="--", linewidth=1, color="black" if "1.5b" in system else "grey")
            ax.plot(xs, ys, "s", color="black" if "1.5b" in system else "grey", label=system)
        else:
            ax.plot(xs, ys, "o-", label=system)
            for x, y, p in zip(xs, ys, pts, strict=True):
                ax.annotate(str(p["n"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per problem (2 x parameters x tokens, verifier included)")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def headline(run_dirs: Sequence[Path], baselines: Sequence[Path], out_dir: Path, title: str) -> list[dict[str, Any]]:
    """The cross-run comparison, slice by slice: runs are grouped by the problems they cover,
    and each group is measured against the baseline run on the same problems. Per slice: a
    table (accuracy, tokens, FLOPs, seconds per problem), a plot against FLOPs
    (headline-SLICE.png), and the smallest budget at which each system reaches the baseline.
    Writes headline.md (every slice) and headline.json; returns the slices."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for d in run_dirs:
        summary = json.loads(_summary_path(d).read_text())
        groups.setdefault(tuple(summary["problem_ids"]), []).append({**summary, "path": str(d)})
    bases = {tuple(b["problem_ids"]): b for b in (json.loads(_summary_path(d).read_text()) for d in baselines)}
    out_dir.mkdir(parents=True, exist_ok=True)
    slices: list[dict[str, Any]] = []
    for ids, members in groups.items():
        if ids not in bases:
            raise ValueError(
                f"no baseline run covers the {len(ids)} problems of {', '.join(m['path'] for m in members)}: give "
                "--baseline a run on the same problems (`eval --limit K --report-only --summary NAME` cuts one)"
            )
        name = slice_name(members[0], [s["name"] for s in slices])
        points = headline_points(members)
        base = headline_points([bases[ids]])[0]
        against_baseline(points, base)
        headline_plot(points, out_dir / f"headline-{name}.png", f"{title}: {name}")
        slices.append(
            {
                "name": name,
                "problems": len(ids),
                "problem_ids": list(ids),
                "points": points,
                "baseline": base,
                "matches": matching_budgets(points, base),
                "matched_tokens": matched_tokens(points),
            }
        )
    md = f"# {title}\n\n" + "\n".join(_slice_md(s) for s in slices)
    (out_dir / "headline.md").write_text(md)
    (out_dir / "headline.json").write_text(json.dumps({"slices": slices}))
    return slices


def slice_name(summary: dict[str, Any], taken: Sequence[str]) -> str:
    """gsm8k-100, math500-l123-60: the dataset, its levels and the number of problems."""
    levels = "".join(map(str, summary.get("levels") or ()))
    name = "-".join(
        x
        for x in (Path(summary["identity"]["dataset"]).stem, f"l{levels}" if levels else "", str(summary["problems"]))
        if x
    )
    return name if name not in taken else f"{name}-{len(taken) + 1}"


def _slice_md(s: dict[str, Any]) -> str:
    matches = "\n".join(f"- {system}: {match_text(m)}" for system, m in s["matches"].items())
    base = s["baseline"]
    return (
        f"## {s['name']}\n\n{s['problems']} problems, the same for every system. Per problem: generated tokens, FLOPs "
        f"(2 x parameters x tokens computed, verifier included; a pool subset is charged its share of the pool), "
        f"seconds on this machine. The paired difference to {base['system']} is over the same problems, with a 95% "
        f"bootstrap interval.\n\n{headline_table(s['points'], base['system'])}\n\n"
        f"Smallest budget reaching {base['system']} ({100 * base['accuracy']:.1f}%), and each system's point "
        f"closest to it:\n\n{matches}\n\n"
        f"![accuracy against FLOPs](headline-{s['name']}.png)\n"
        + (
            "\nRound strategies against resampling at matched tokens (the pool system's smallest budget that "
            f"generated at least as many tokens):\n\n{matched_table(s['matched_tokens'])}\n"
            if s.get("matched_tokens")
            else ""
        )
    )


def _embed(png: Path) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}" width="900">'


def _headline_section(sl: dict[str, Any], out_dir: Path) -> str:
    plot = out_dir / f"headline-{sl['name']}.png"
    rows = "".join(
        f"<tr><th>{html.escape(p['system'])}</th><td>{p['n']}</td><td>{100 * p['accuracy']:.1f} "
        f"<small>[{100 * p['ci_low']:.0f}-{100 * p['ci_high']:.0f}]</small></td>"
        f"<td>{_vs_text(p)}</td><td>{p['generated_tokens']:.0f}"
        f"</td><td>{p.get('flops', 0.0):.3g}</td><td>{p.get('wall_time', 0.0):.1f}</td></tr>"
        for p in sl["points"]
    )
    matches = "".join(f"<li>{html.escape(k)}: {html.escape(match_text(m))}</li>" for k, m in sl["matches"].items())
    return (
        f"<h2>Headline: {html.escape(sl['name'])} ({sl['problems']} problems)</h2><table><tr><th>system</th>"
        f"<th>N</th><th>accuracy %</th><th>vs {html.escape(sl['baseline']['system'])}, paired</th>"
        f"<th>generated tokens</th><th>FLOPs</th><th>seconds</th></tr>{rows}</table>"
        f"<p>Per problem. Smallest budget reaching {html.escape(sl['baseline']['system'])} "
        f"({100 * sl['baseline']['accuracy']:.1f}%), and each system's point closest to it:</p><ul>{matches}</ul>"
        f"{_embed(plot)}"
    )


def _run_section(d: Path) -> str:
    summary_path = _summary_path(d)
    summary = json.loads(summary_path.read_text())
    ident = summary["identity"]
    status = "" if summary.get("complete", True) else " (PARTIAL)"
    c = summary["compute_total"]
    named = d.suffix == ".json" and d.name != "summary.json"
    plot = d.with_suffix(".png") if named else summary_path.parent / "plot.png"
    img = _embed(plot) if plot.exists() else ""
    return (
        f"<h2>{html.escape(str(d))}{status}</h2>"
        f"<p>{html.escape(ident['model'])} on {html.escape(ident['dataset'])}, {summary['problems']} problems, "
        f"seed {ident['seed']}, sampling {html.escape(json.dumps(ident['sampling']))}, verifier "
        f"{html.escape(summary['scorer'])}/{html.escape(summary['aggregation'])}. Accuracy in %, 95% interval, "
        f"generated tokens per problem.</p>{_table(summary['points'])}"
        f"<p>Compute of the whole run: {c['generated_tokens']:,} generated tokens, {c['prompt_tokens']:,} prompt "
        f"tokens computed, {c['cached_prompt_tokens']:,} served from cache, {c['verifier_tokens']:,} verifier "
        f"tokens, {c['wall_time']:.0f} s, {c['flops']:.3g} FLOPs.</p>{img}"
    )


def build_report(
    run_dirs: Sequence[Path],
    tree: tuple[Path, str | None, str | None] | None = None,
    baselines: Sequence[Path] = (),
    out_dir: Path | None = None,
    title: str = "ttscale report",
) -> str:
    """The HTML page; with baseline runs, first the cross-run headline of every slice of
    problems (also written as headline.md/.json and headline-SLICE.png into out_dir)."""
    out_dir = out_dir or Path(".")
    slices = headline(run_dirs, baselines, out_dir, title) if baselines else []
    sections = [_headline_section(sl, out_dir) for sl in slices] + [_run_section(d) for d in run_dirs]
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
        f"<body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>"
    )
