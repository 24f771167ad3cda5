"""A reader of the flowcharts ``bus_orchestrator.diagram`` writes, for tests to assert on.

It knows only the line forms the diagram uses, and fails on any other line, so a change of
form shows up here. ``tests/integration/test_diagram_mermaid.py`` checks that Mermaid's own
parser reads the same nodes, edges and subgraphs out of the same text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SHAPES = {
    "((": ("circle", "))"),
    "(": ("round", ")"),
    "[[": ("subroutine", "]]"),
    "[/": ("lean_right", "/]"),
    "[": ("square", "]"),
    "{{": ("hexagon", "}}"),
    "{": ("diamond", "}"),
}
"""Mermaid's opening brackets, with the shape names Mermaid's parser gives them."""

NODE = re.compile(r'^(\w+)(\(\(|\(|\[\[|\[/|\[|\{\{|\{)"([^"]*)"(\)\)|\)|\]\]|/\]|\]|\}\}|\})$')
END_NODE = re.compile(r"^(\w+)\(\((\1)\)\)$")
EDGE = re.compile(r'^(\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$')
SUBGRAPH = re.compile(r'^subgraph (\w+) \["([^"]*)"\]$')

Edge = tuple[str, str, str, str]
"""(source, arrow, label, target); the arrow is ``-->`` (solid) or ``-.->`` (dashed)."""


@dataclass
class Flowchart:
    nodes: dict[str, str] = field(default_factory=dict)
    """Node id -> label."""
    shapes: dict[str, str] = field(default_factory=dict)
    """Node id -> shape (Mermaid's name for it)."""
    edges: list[Edge] = field(default_factory=list)
    """In the order drawn."""
    subgraphs: dict[str, str] = field(default_factory=dict)
    """Subgraph id -> title."""
    members: dict[str, list[str]] = field(default_factory=dict)
    """Subgraph id -> the nodes and subgraphs declared directly in it."""
    comments: list[str] = field(default_factory=list)

    def edges_from(self, source: str) -> set[tuple[str, str]]:
        """(label, target) of every edge leaving ``source``."""
        return {(label, target) for s, _, label, target in self.edges if s == source}

    def inside(self, subgraph: str) -> set[str]:
        """Every node in ``subgraph``, nested subgraphs included."""
        found: set[str] = set()
        for member in self.members[subgraph]:
            found |= self.inside(member) if member in self.members else {member}
        return found


def parse(text: str) -> Flowchart:
    """The flowchart in ``text``; every line must be one of the forms the diagram writes,
    indented four spaces per level of subgraph."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    chart = Flowchart()
    open_subgraphs: list[str] = []
    for line in lines[1:]:
        depth = len(open_subgraphs)
        if open_subgraphs and line == "    " * depth + "end":
            open_subgraphs.pop()
            continue
        body = line.removeprefix("    " * (depth + 1))
        assert body == line.lstrip(" "), f"misindented: {line!r}"
        if open_subgraphs:
            assert not EDGE.match(body), f"edge inside a subgraph: {line!r}"
        if comment := re.match(r"^%% (.*)$", body):
            chart.comments.append(comment[1])
        elif subgraph := SUBGRAPH.match(body):
            chart.subgraphs[subgraph[1]] = subgraph[2]
            chart.members[subgraph[1]] = []
            if open_subgraphs:
                chart.members[open_subgraphs[-1]].append(subgraph[1])
            open_subgraphs.append(subgraph[1])
        elif end := END_NODE.match(body):
            chart.nodes[end[1]] = end[1]
            chart.shapes[end[1]] = "circle"
        elif node := NODE.match(body):
            shape, closing = SHAPES[node[2]]
            assert node[4] == closing, f"unbalanced brackets: {line!r}"
            assert node[1] not in chart.nodes, f"node declared twice: {line!r}"
            chart.nodes[node[1]] = node[3]
            chart.shapes[node[1]] = shape
            if open_subgraphs:
                chart.members[open_subgraphs[-1]].append(node[1])
        elif edge := EDGE.match(body):
            chart.edges.append((edge[1], edge[2], edge[3] or "", edge[4]))
        else:
            raise AssertionError(f"not a line the diagram writes: {line!r}")
    assert not open_subgraphs, f"subgraphs left open: {open_subgraphs}"
    known = set(chart.nodes) | set(chart.subgraphs)
    dangling = {e for e in chart.edges if e[0] not in known or e[3] not in known}
    assert not dangling, f"edges to undeclared nodes: {dangling}"
    return chart
