"""The step graph of a workflow (or of one run) as server-side SVG: one box per step, coloured by state, columns by
depth (longest path from a root), an arrow per dependency. No JavaScript, no CDN."""

from django.utils.html import escape

STEP_COLOURS = {
    "PENDING": "#bdbdbd",
    "QUEUED": "#8fb8ef",
    "RUNNING": "#2a7ae2",
    "RETRY": "#e08e0b",
    "WAITING": "#b8860b",
    "COMPLETED": "#2e8b57",
    "FAILED": "#c0392b",
    "SKIPPED": "#9e9e9e",
    "CANCELLED": "#555555",
    None: "#6d8fb3",
}
BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 46, 60, 18, 10


def layout(nodes: list[tuple[str, list[str]]]) -> dict[str, tuple[int, int]]:
    """(column, row) of each step; `nodes` is (name, parents) in topological order."""
    depth: dict[str, int] = {}
    for name, parents in nodes:
        depth[name] = 1 + max((depth[p] for p in parents), default=-1)
    rows: dict[int, int] = {}
    place = {}
    for name, _ in nodes:
        col = depth[name]
        place[name] = (col, rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    return place


def svg(nodes: list[dict]) -> str:
    """`nodes`: dicts with `name`, `depends_on`, and optionally `state`, `attempts`, `max_attempts`, in topological
    order. Returns an <svg> element (escaped text)."""
    place = layout([(n["name"], list(n["depends_on"])) for n in nodes])
    cols = max((c for c, _ in place.values()), default=0) + 1
    rows = max((r for _, r in place.values()), default=0) + 1
    width, height = PAD * 2 + cols * BOX_W + (cols - 1) * GAP_X, PAD * 2 + rows * BOX_H + (rows - 1) * GAP_Y

    def xy(name):
        col, row = place[name]
        return PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y)

    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="workflow-graph" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" style="max-width:100%;height:auto" role="img" '
            'aria-label="workflow graph">'
        ),
        (
            '<defs><marker id="wf-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
            'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#777"/></marker></defs>'
        ),
    ]
    for node in nodes:
        x2, y2 = xy(node["name"])
        for parent in node["depends_on"]:
            x1, y1 = xy(parent)
            sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H / 2, x2, y2 + BOX_H / 2
            mid = (sx + ex) / 2
            parts.append(
                f'<path class="wf-edge" d="M {sx} {sy} C {mid} {sy}, {mid} {ey}, {ex} {ey}" fill="none" '
                f'stroke="#777" stroke-width="1.5" marker-end="url(#wf-arrow)"/>'
            )
    for node in nodes:
        x, y = xy(node["name"])
        state = node.get("state")
        colour = STEP_COLOURS.get(state, STEP_COLOURS[None])
        label = escape(node["name"])
        sub = escape(state) if state else f"max {node.get('max_attempts', '')} attempts"
        if state and node.get("attempts"):
            sub += f" · {node['attempts']}/{node.get('attempts_limit') or node.get('max_attempts')}"
        parts.append(
            f'<g class="wf-step" data-step="{label}" data-state="{escape(state or "")}">'
            f"<title>{label}: {escape(state or 'declared')}</title>"
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{colour}"/>'
            f'<text x="{x + BOX_W / 2}" y="{y + 19}" text-anchor="middle" fill="#fff" font-size="13" '
            f'font-weight="bold" font-family="sans-serif">{label}</text>'
            f'<text x="{x + BOX_W / 2}" y="{y + 36}" text-anchor="middle" fill="#fff" font-size="11" '
            f'font-family="sans-serif">{sub}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def workflow_svg(wf) -> str:
    return svg(
        [
            {"name": n, "depends_on": list(wf.step(n).depends_on), "max_attempts": wf.step(n).attempts_for({})}
            for n in wf.order
        ]
    )


def run_svg(steps) -> str:
    """`steps`: the run's WorkflowStep rows in position order."""
    return svg(
        [
            {
                "name": s.name,
                "depends_on": s.depends_on,
                "state": s.state,
                "attempts": s.attempts,
                "max_attempts": s.max_attempts,
                "attempts_limit": s.attempts_limit,
            }
            for s in steps
        ]
    )
