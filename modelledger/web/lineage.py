"""A model's lineage as server-side SVG: one row per version (oldest at the top), a lane per branch, an edge
from each version to its parent. No script draws it, so it also shows what it shows in a past view, in a
print, and with scripts off.

Lanes: a version continues its parent's lane when it is the parent's first child drawn; a second child of
the same parent opens a new lane (git log --graph's rule, simplified: lanes are never reused).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

from projections.records import VersionRecord

ROW, LANE, LEFT, TOP, RADIUS = 34, 22, 16, 18, 7
MAX_LANES = 16  # more branches than this share the last lane (still connected, only less tidy)
STATUS_FILL = {"ready": "#2e7d32", "pending": "#b26a00", "failed": "#c62828", "purged": "#6b6b6b"}


@dataclass(frozen=True)
class Node:
    version: VersionRecord
    lane: int
    row: int


def layout(versions: Sequence[VersionRecord]) -> list[Node]:
    """Rows in version order; lanes so that a straight chain of updates stays in one column."""
    lane_of: dict[int, int] = {}
    continued: set[int] = set()  # parents whose lane a child already continues
    lanes = 0
    nodes = []
    for row, v in enumerate(sorted(versions, key=lambda x: x.version)):
        parent = v.parent
        if parent in lane_of and parent not in continued:
            lane = lane_of[parent]
            continued.add(parent)
        else:
            lane = min(lanes, MAX_LANES - 1)
            lanes += 1
        lane_of[v.version] = lane
        nodes.append(Node(v, lane, row))
    return nodes


def _xy(node: Node) -> tuple[int, int]:
    return LEFT + node.lane * LANE, TOP + node.row * ROW


def svg(versions: Sequence[VersionRecord], link: Callable[[VersionRecord], str], *, title: str) -> Markup:
    """The graph, every node a link (``link(version)``) a keyboard reaches in version order."""
    nodes = layout(versions)
    if not nodes:
        return Markup("")
    by_version = {n.version.version: n for n in nodes}
    lanes = max(n.lane for n in nodes) + 1
    text_x = LEFT + lanes * LANE + 6
    width = text_x + 240
    height = 2 * TOP + (len(nodes) - 1) * ROW
    parts = [
        f'<svg class="lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="group" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    for node in nodes:  # edges first, so nodes are drawn over them
        parent = by_version.get(node.version.parent) if node.version.parent is not None else None
        x, y = _xy(node)
        if parent is None:
            if node.version.parent is not None:  # its parent is not in the drawing (shown: a stub upwards)
                parts.append(f'<path class="edge edge-out" d="M{x},{y} L{x},{y - ROW // 2}" />')
            continue
        px, py = _xy(parent)
        if px == x:
            d = f"M{px},{py} L{x},{y}"
        else:  # leave the parent's lane, curve into the child's
            mid = py + ROW // 2
            d = f"M{px},{py} C{px},{mid} {x},{mid} {x},{min(mid + ROW // 2, y)} L{x},{y}"
        parts.append(f'<path class="edge" d="{d}" />')
    for node in nodes:
        v = node.version
        x, y = _xy(node)
        fill = STATUS_FILL.get(v.status, "#6b6b6b")
        label = f"@{v.version}"
        extra = []
        if v.aliases:
            extra.append(", ".join(v.aliases))
        if v.deleted:
            extra.append("deleted")
        if v.status != "ready":
            extra.append(v.status)
        parent = f", parent @{v.parent}" if v.parent is not None else ", a root"
        name = f"{v.name}@{v.version}{parent}, {v.status}" + (", deleted" if v.deleted else "")
        if v.aliases:
            name += ", aliases " + ", ".join(v.aliases)
        cls = "node deleted" if v.deleted else "node"
        dash = ' stroke-dasharray="3 2"' if v.deleted else ""
        inside = "#ffffff" if v.deleted else fill
        circle = f'<circle cx="{x}" cy="{y}" r="{RADIUS}" fill="{inside}" stroke="{fill}" stroke-width="2"{dash} />'
        parts.append(
            f'<a class="{cls}" href="{escape(link(v))}" aria-label="{escape(name)}">'
            f"<title>{escape(name)}</title>{circle}"
            f'<text x="{text_x}" y="{y + 4}"><tspan class="ver">{escape(label)}</tspan>'
            + (f'<tspan class="aliases" dx="8">{escape(" · ".join(extra))}</tspan>' if extra else "")
            + "</text></a>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))
