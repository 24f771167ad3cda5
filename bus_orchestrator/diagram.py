"""A saga definition drawn as a Mermaid flowchart (``bus-orchestrator sagas diagram NAME``).

Pure: a definition in, text out. What is drawn:

- the start event(s), a rounded node, leading to the first step;
- each step, a box naming the command it sends (when declared, ``Step.sends``), with an
  edge per outcome: its success replies to the next step (or, for a branch, to each target
  ``Step.branches`` declares; a step whose ``next`` is undeclared shows its default next step,
  marked ``default``), its failure replies and its timeout to the compensation that undoes
  what was done before it;
- the compensations, in reverse order in a subgraph of their own, dashed from one to the
  one before and to ``compensated``; a compensation that fails or is never confirmed leads
  to ``failed``;
- the reactions, diamonds dotted into the compensation subgraph (a reaction *may* undo the
  saga: what it returns is not known statically).

A step that times out is treated as possibly done, so its timeout leads to its own
compensation when it has one; a step that fails did nothing, so its failure replies lead to
the compensation of the last earlier step that has one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from bus_orchestrator.core.definition import END, SagaDefinition, Step
from bus_orchestrator.core.messages import Message

COMPLETED, COMPENSATED, FAILED = "completed", "compensated", "failed"
COMPENSATION = "compensation"
"""The id of the subgraph that holds the compensations."""


def diagram(definition: SagaDefinition[Any, Any]) -> str:
    """The Mermaid ``flowchart`` of ``definition``, one line per node or edge, ``\\n`` ended."""
    steps = list(definition.steps)
    lines = [
        "flowchart TD",
        f"    %% saga {definition.name}, version {definition.version}",
        f"    start({_text('<br/>'.join(t.message_type for t in definition.start_types))})",
        f"    start --> {_step_id(steps[0])}",
    ]
    for index, step in enumerate(steps):
        lines.append(f"    {_step_id(step)}[{_text(_step_label(step))}]")
        lines += _forward_edges(steps, index)
        undo = _undo_from(steps, index - 1)
        if step.fails_on:
            lines.append(f"    {_step_id(step)} -->|{_text(_types(step.fails_on))}| {undo}")
        timed_out = _undo_from(steps, index)
        label = _timeout(step.timeout, step.max_attempts)
        lines.append(f"    {_step_id(step)} -->|{_text(label)}| {timed_out}")
    compensable = [s for s in reversed(steps) if s.compensation is not None]
    if compensable:
        lines.append(f"    subgraph {COMPENSATION} [{_text('compensation, in reverse order')}]")
        for step in compensable:
            lines.append(f"        {_undo_id(step)}[{_text(_undo_label(step))}]")
        lines.append("    end")
        for position, step in enumerate(compensable):
            after = (
                _undo_id(compensable[position + 1])
                if position + 1 < len(compensable)
                else COMPENSATED
            )
            lines.append(f"    {_undo_id(step)} -.->|{_text(_types(step.compensated_on))}| {after}")
            gave_up = _timeout(step.timeout, step.compensation_max_attempts)
            if step.compensation_fails_on:
                gave_up = f"{_types(step.compensation_fails_on)} or {gave_up}"
            lines.append(f"    {_undo_id(step)} -.->|{_text(gave_up)}| {FAILED}")
    for number, reaction in enumerate(definition.reactions):
        node = f"reaction_{number}"
        lines.append(f"    {node}{{{_text(reaction.event.message_type)}}}")
        target = COMPENSATION if compensable else COMPENSATED
        lines.append(f"    {node} -.->|{_text('may compensate')}| {target}")
    lines += [
        f"    {COMPLETED}(({COMPLETED}))",
        f"    {COMPENSATED}(({COMPENSATED}))",
        f"    {FAILED}(({FAILED}))",
    ]
    return "\n".join(lines) + "\n"


def _forward_edges(steps: Sequence[Step[Any]], index: int) -> list[str]:
    step = steps[index]
    following = _step_id(steps[index + 1]) if index + 1 < len(steps) else COMPLETED
    success = _types(step.succeeds_on)
    if step.next is None:
        return [f"    {_step_id(step)} -->|{_text(success)}| {following}"]
    if not step.branches:
        return [f"    {_step_id(step)} -->|{_text(success + ' default')}| {following}"]
    by_name = {s.name: s for s in steps}
    return [
        f"    {_step_id(step)} -->|{_text(success)}| "
        f"{COMPLETED if target == END else _step_id(by_name[target])}"
        for target in step.branches
    ]


def _undo_from(steps: Sequence[Step[Any]], index: int) -> str:
    """Where undoing starts when steps ``0 .. index`` may have been done."""
    for step in reversed(steps[: index + 1]):
        if step.compensation is not None:
            return _undo_id(step)
    return COMPENSATED


def _step_label(step: Step[Any]) -> str:
    sends = f"<br/>{step.sends.message_type}" if step.sends is not None else ""
    return f"{step.name}{sends}"


def _undo_label(step: Step[Any]) -> str:
    sends = (
        f"<br/>{step.compensation_sends.message_type}"
        if step.compensation_sends is not None
        else ""
    )
    return f"undo {step.name}{sends}"


def _step_id(step: Step[Any]) -> str:
    return "step_" + _safe(step.name)


def _undo_id(step: Step[Any]) -> str:
    return "undo_" + _safe(step.name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _types(models: Sequence[type[Message]]) -> str:
    return " or ".join(m.message_type for m in models)


def _text(text: str) -> str:
    """Mermaid text in quotes; a quote inside becomes its entity."""
    return '"' + text.replace('"', "#quot;") + '"'


def _timeout(delta: timedelta, attempts: int) -> str:
    tries = f", {attempts} attempts" if attempts > 1 else ""
    return f"timeout {_duration(delta)}{tries}"


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}min"
    return f"{seconds:g}s"
