"""Server-side SVG: a plan's steps as a graph, and the two charts (runs per status per day, step durations).

Computed here so the dashboard needs no charting script; each figure has a <title> and a text alternative.
"""

from __future__ import annotations

from html import escape
from typing import Any

from libs.domain.definition import dependencies

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 46, 60, 18, 12
STATUS_ORDER = ("completed", "failed", "cancelled", "awaiting_approval", "running", "pending")
PATTERNS = {"failed": "url(#hatch)", "cancelled": "url(#dots)"}


def _levels(nodes: list[dict[str, Any]]) -> dict[str, int]:
    """Each step's column: one past the deepest step it depends on (longest path; unknown ids ignored; a step on
    a cycle counts as column 0 where the cycle closes). A loop, not recursion: a long chain declared last step
    first must not end in a RecursionError (a 500)."""
    ids = {n["id"] for n in nodes}
    deps = {n["id"]: [d for d in dependencies(n) if d in ids] for n in nodes}
    level: dict[str, int] = {}
    for n in nodes:
        if n["id"] in level:
            continue
        # Depth-first, the path on an explicit stack: (step, its dependencies not yet looked at, deepest so far).
        stack = [(n["id"], iter(deps[n["id"]]), [-1])]
        on_path = {n["id"]}
        while stack:
            sid, pending, deepest = stack[-1]
            for dep in pending:
                if dep in level:
                    deepest[0] = max(deepest[0], level[dep])
                elif dep in on_path:  # a cycle cannot be saved, but never loop on one
                    deepest[0] = max(deepest[0], 0)
                else:
                    stack.append((dep, iter(deps[dep]), [-1]))
                    on_path.add(dep)
                    break
            else:
                stack.pop()
                on_path.discard(sid)
                level[sid] = 1 + deepest[0]
                if stack:
                    stack[-1][2][0] = max(stack[-1][2][0], level[sid])
    return level


def plan_graph(definition: dict[str, Any], states: dict[str, str] | None = None) -> str:
    """Steps left to right by dependency depth, edges from each dependency; a step's state as a word."""
    nodes = [n for n in definition.get("nodes", []) if isinstance(n, dict) and isinstance(n.get("id"), str)]
    if not nodes:
        return '<p>This plan has no steps.</p>'
    level = _levels(nodes)
    columns: dict[int, list[dict[str, Any]]] = {}
    for n in nodes:
        columns.setdefault(level[n["id"]], []).append(n)
    pos = {}
    for col, members in columns.items():
        for row, n in enumerate(members):
            pos[n["id"]] = (PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y))
    width = PAD * 2 + (max(columns) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(len(m) for m in columns.values()) * (NODE_H + GAP_Y) - GAP_Y
    parts = [f'<svg class="graph" role="img" aria-labelledby="graph-title" viewBox="0 0 {width} {height}"'
             f' width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             '<title id="graph-title">Plan steps and their dependencies</title>',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7"'
             ' orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z"/></marker></defs>']
    for n in nodes:
        x2, y2 = pos[n["id"]]
        for dep in dependencies(n):
            if dep in pos:
                x1, y1 = pos[dep]
                parts.append(f'<line class="edge" x1="{x1 + NODE_W}" y1="{y1 + NODE_H / 2}" x2="{x2}"'
                             f' y2="{y2 + NODE_H / 2}" marker-end="url(#arrow)"/>')
    for n in nodes:
        x, y = pos[n["id"]]
        state = (states or {}).get(n["id"], "")
        label = escape(n["id"][:22])
        kind = escape(str(n.get("action") or n.get("type", ""))[:24]) + (f" · {escape(state)}" if state else "")
        parts.append(f'<g class="node {escape(state)}" data-step="{escape(n["id"])}"><rect x="{x}" y="{y}"'
                     f' width="{NODE_W}" height="{NODE_H}" rx="6"/><text x="{x + 8}" y="{y + 19}"'
                     f' class="label">{label}</text><text x="{x + 8}" y="{y + 36}" class="kind">{kind}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


def runs_chart(per_day: dict[str, dict[str, int]]) -> str:
    """Stacked bars of runs started per day, by status; patterns as well as colours tell failed from done."""
    days = list(per_day)
    peak = max((sum(v.values()) for v in per_day.values()), default=0) or 1
    bar_w, chart_h, left, top = 26, 140, 30, 10
    width, height = left + len(days) * (bar_w + 6) + 10, chart_h + top + 40
    parts = [f'<svg class="chart" role="img" aria-labelledby="runs-chart-title" viewBox="0 0 {width} {height}"'
             f' width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             '<title id="runs-chart-title">Runs started per day, by status</title>',
             '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse"'
             ' patternTransform="rotate(45)"><rect width="6" height="6" class="s-failed"/>'
             '<line x1="0" y1="0" x2="0" y2="6" stroke="#fff" stroke-width="2"/></pattern>'
             '<pattern id="dots" width="5" height="5" patternUnits="userSpaceOnUse"><rect width="5" height="5"'
             ' class="s-cancelled"/><circle cx="2.5" cy="2.5" r="1" fill="#fff"/></pattern></defs>',
             f'<text x="2" y="{top + 8}" class="axis">{peak}</text>',
             f'<line class="axis" x1="{left - 2}" y1="{top}" x2="{left - 2}" y2="{top + chart_h}"/>']
    for i, day in enumerate(days):
        x, y = left + i * (bar_w + 6), top + chart_h
        for status in STATUS_ORDER:
            count = per_day[day].get(status, 0)
            if not count:
                continue
            h = chart_h * count / peak
            y -= h
            fill = f' style="fill:{PATTERNS[status]}"' if status in PATTERNS else ""
            parts.append(f'<rect class="s-{status}"{fill} x="{x}" y="{y:.1f}" width="{bar_w}" height="{h:.1f}">'
                         f'<title>{day}: {count} {status}</title></rect>')
        parts.append(f'<text class="axis" x="{x}" y="{top + chart_h + 14}">{day[8:]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def durations_chart(durations: dict[str, float]) -> str:
    """Horizontal bars: mean seconds per step, the number written at the end of each bar."""
    if not durations:
        return "<p>No finished steps with timings yet.</p>"
    peak = max(durations.values()) or 1.0
    row_h, left, bar_max = 22, 150, 300
    height, width = len(durations) * row_h + 10, left + bar_max + 90
    parts = [f'<svg class="chart" role="img" aria-labelledby="dur-title" viewBox="0 0 {width} {height}"'
             f' width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
             '<title id="dur-title">Mean step duration in seconds</title>']
    for i, (step, seconds) in enumerate(durations.items()):
        y = 5 + i * row_h
        w = max(2.0, bar_max * seconds / peak)
        parts.append(f'<text class="axis" x="0" y="{y + 14}">{escape(step[:22])}</text>'
                     f'<rect class="s-running" x="{left}" y="{y}" width="{w:.1f}" height="{row_h - 6}"/>'
                     f'<text class="axis" x="{left + w + 6:.1f}" y="{y + 14}">{seconds:.3f} s</text>')
    parts.append("</svg>")
    return "".join(parts)
