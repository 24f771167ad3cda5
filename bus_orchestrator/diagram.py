"""A saga definition drawn as a Mermaid flowchart (``bus-orchestrator sagas diagram NAME``).

Pure: a definition in, text out, the same text for the same definition. What is drawn:

- the start event(s), a rounded node, with the lock keys the saga holds (``locks``), leading
  to the first stage;
- each step, a box naming the command it sends (when declared, ``Step.sends``), with an
  edge per outcome: its success replies to the next stage (or, for a branch, to each target
  ``Step.branches`` declares; a step whose ``next`` is undeclared shows its default next
  stage, marked ``default``), its failure replies and its timeout to the compensation that
  undoes what was done before it (or, for a step with ``OnFailure.SUSPEND``, to a
  ``suspended`` node from which an operator retries it or aborts); a step that retries
  (``Step.retry``) loops back to itself,
  and its transient replies fail it on its last attempt;
- a wait, a parallelogram naming the event it waits for, which leads on; its timeout undoes
  what was done before it (a wait has nothing to undo itself);
- a child saga, a subroutine box naming the child's saga type and start event, with the
  child's end events as edges: ``completed`` leads on, the others undo what came before;
- a parallel group, a subgraph whose fork starts every member and whose join, reached by
  each member's success, leads on once all succeeded; a member that fails leads to the
  compensations of the group (a subgraph of its own in the compensation subgraph), since
  the others may have succeeded;
- the compensations, in reverse declaration order in a subgraph of their own, dashed from
  one to the one before and to ``compensated``; a compensation that fails or is never
  confirmed leads to ``failed``;
- the reactions, diamonds dotted into the compensation subgraph (a reaction *may* undo the
  saga: what it returns is not known statically), and the saga's cancel event, which does.

A step that times out is treated as possibly done, so its timeout leads to its own
compensation when it has one; a step that fails did nothing, so its failure replies lead to
the compensation of the last earlier step that has one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from bus_orchestrator.core.definition import (
    END,
    Child,
    Member,
    OnFailure,
    Parallel,
    RetryOn,
    SagaDefinition,
    Stage,
    Step,
    Wait,
)
from bus_orchestrator.core.lifecycle import cancel_event, end_event
from bus_orchestrator.core.messages import Message

COMPLETED, COMPENSATED, FAILED = "completed", "compensated", "failed"
COMPENSATION = "compensation"
"""The id of the subgraph that holds the compensations."""
CANCEL = "cancel"
"""The id of the node of the saga's cancel event."""
Undoable = Step[Any, Any] | Child[Any]
"""A step that may have a compensation."""


def diagram(definition: SagaDefinition[Any, Any]) -> str:
    """The Mermaid ``flowchart`` of ``definition``, one line per node or edge, ``\\n`` ended."""
    return "\n".join(_Drawing(definition).lines()) + "\n"


class _Drawing:
    """The lines of one definition's flowchart, stage by stage."""

    def __init__(self, definition: SagaDefinition[Any, Any]) -> None:
        self.definition = definition
        self.stages: list[Stage[Any]] = definition.stages()
        self.compensable: list[Undoable] = [
            m for m in reversed(definition.all_steps()) if _compensation_of(m)
        ]

    def lines(self) -> list[str]:
        definition = self.definition
        start = "<br/>".join(t.message_type for t in definition.start_types)
        if definition.locks:
            start += f"<br/>holds {', '.join(definition.locks)}"
        lines = [
            "flowchart TD",
            f"    %% saga {definition.name}, version {definition.version}",
            f"    start({_text(start)})",
            f"    start --> {self.entry(self.stages[0])}",
        ]
        for index, stage in enumerate(self.stages):
            if isinstance(stage, Parallel):
                lines += self.group(index, stage)
            else:
                lines.append(f"    {_node(stage)}")
                lines += self.forward(index, stage)
                lines += self.member_edges(stage, self.undo_before(index), self.undo_at(index))
        lines += self.compensations()
        undo = COMPENSATION if self.compensable else COMPENSATED
        for number, reaction in enumerate(definition.reactions):
            node = f"reaction_{number}"
            lines.append(f"    {node}{{{_text(reaction.event.message_type)}}}")
            lines.append(f"    {node} -.->|{_text('may compensate')}| {undo}")
        lines.append(f"    {CANCEL}{{{_text(cancel_event(definition.name).message_type)}}}")
        lines.append(f"    {CANCEL} -.->|{_text('compensates')}| {undo}")
        lines += [
            f"    {COMPLETED}(({COMPLETED}))",
            f"    {COMPENSATED}(({COMPENSATED}))",
            f"    {FAILED}(({FAILED}))",
        ]
        return lines

    # -- forward -------------------------------------------------------------------------

    def entry(self, stage: Stage[Any]) -> str:
        """The node a stage is entered by: the step, or the fork of a group."""
        return _fork_id(stage) if isinstance(stage, Parallel) else _step_id(stage)

    def following(self, index: int) -> str:
        return self.entry(self.stages[index + 1]) if index + 1 < len(self.stages) else COMPLETED

    def forward(self, index: int, step: Member[Any]) -> list[str]:
        """The edges of a stage's success: to the next stage, or to each declared branch."""
        following = self.following(index)
        source = _step_id(step)
        if isinstance(step, Wait):
            return [f"    {source} -->|{_text(step.event.message_type)}| {following}"]
        if isinstance(step, Child):
            done = end_event(step.saga, COMPLETED).message_type
            return [f"    {source} -->|{_text(done)}| {following}"]
        success = _types(step.succeeds_on)
        if step.next is None:
            return [f"    {source} -->|{_text(success)}| {following}"]
        if not step.branches:
            return [f"    {source} -->|{_text(success + ' default')}| {following}"]
        by_name = {s.name: s for s in self.stages}
        return [
            f"    {source} -->|{_text(success)}| "
            f"{COMPLETED if target == END else self.entry(by_name[target])}"
            for target in step.branches
        ]

    def member_edges(self, step: Member[Any], failed: str, timed_out: str) -> list[str]:
        """A step's edges other than its success: retries, failures and its timeout.

        ``failed`` is where undoing starts when the step did nothing, ``timed_out`` where it
        starts when the step may have been done."""
        source = _step_id(step)
        lines = []
        if isinstance(step, Step) and step.on_failure is OnFailure.SUSPEND:
            # its failure holds the saga for an operator, who retries, skips or aborts
            held = f"{source}_suspended"
            lines += [
                f"    {held}[/{_text('suspended: an operator retries, skips or aborts')}/]",
                f"    {held} -.->|{_text('retry')}| {source}",
                f"    {held} -.->|{_text('abort')}| {timed_out}",
            ]
            failed = timed_out = held
        if isinstance(step, Step):
            failures = [_types(step.fails_on)] if step.fails_on else []
            if step.retry is not None:
                lines.append(f"    {source} -->|{_text(_retry(step.retry))}| {source}")
                failures.append(f"{_types(step.retry.transient)} on attempt {step.retry.attempts}")
            if failures:
                lines.append(f"    {source} -->|{_text('<br/>'.join(failures))}| {failed}")
            label = _timeout(step.timeout, step.max_attempts)
        elif isinstance(step, Child):
            ends = (end_event(step.saga, s).message_type for s in (COMPENSATED, FAILED))
            lines.append(f"    {source} -->|{_text(' or '.join(ends))}| {failed}")
            label = _timeout(step.timeout, 1) + ", cancels the child"
        else:
            label = _timeout(step.timeout, 1)
            timed_out = failed  # a wait that timed out did nothing
        lines.append(f"    {source} -->|{_text(label)}| {timed_out}")
        return lines

    def group(self, index: int, group: Parallel[Any]) -> list[str]:
        """A parallel group: a subgraph from its fork, through its members, to its join."""
        fork, join = _fork_id(group), _join_id(group)
        lines = [
            f"    subgraph {_group_id(group)} [{_text(group.name + ', in parallel')}]",
            f"        {fork}{{{{{_text(group.name + ': all start')}}}}}",
            *(f"        {_node(member)}" for member in group.members()),
            f"        {join}{{{{{_text(group.name + ': all succeeded')}}}}}",
            "    end",
        ]
        for member in group.members():
            lines.append(f"    {fork} --> {_step_id(member)}")
        before = self.undo_before(index)
        undone = [m for m in group.members() if _compensation_of(m)]
        for member in group.members():
            # The others may have succeeded: undoing starts in the group, newest first.
            others = [m for m in undone if m is not member]
            failed = _undoing_id(group) if others else before
            timed_out = _undoing_id(group) if undone else before
            lines += self.forward_in_group(member, join)
            lines += self.member_edges(member, failed, timed_out)
        lines.append(f"    {join} --> {self.following(index)}")
        return lines

    def forward_in_group(self, member: Member[Any], join: str) -> list[str]:
        if isinstance(member, Wait):
            success = member.event.message_type
        elif isinstance(member, Child):
            success = end_event(member.saga, COMPLETED).message_type
        else:
            success = _types(member.succeeds_on)
        return [f"    {_step_id(member)} -->|{_text(success)}| {join}"]

    # -- compensation --------------------------------------------------------------------

    def undo_before(self, index: int) -> str:
        """Where undoing starts when the stages before stage ``index`` may have been done."""
        earlier = {m.name for s in self.stages[:index] for m in _members(s)}
        for step in self.compensable:
            if step.name in earlier:
                return _undo_id(step)
        return COMPENSATED

    def undo_at(self, index: int) -> str:
        """Where undoing starts when stage ``index`` (a step) may have been done too."""
        stage = self.stages[index]
        if isinstance(stage, Step | Child) and _compensation_of(stage):
            return _undo_id(stage)
        return self.undo_before(index)

    def compensations(self) -> list[str]:
        """The compensation subgraph, in reverse order, a group's own nested in it."""
        if not self.compensable:
            return []
        lines = [f"    subgraph {COMPENSATION} [{_text('compensation, in reverse order')}]"]
        open_group: Parallel[Any] | None = None
        for step in self.compensable:
            stage = self.definition.stage(step.name)
            group = stage if isinstance(stage, Parallel) else None
            if group is not open_group:
                if open_group is not None:
                    lines.append("        end")
                if group is not None:
                    label = f"undo {group.name}: what succeeded, in reverse"
                    lines.append(f"        subgraph {_undoing_id(group)} [{_text(label)}]")
                open_group = group
            indent = "            " if group is not None else "        "
            lines.append(f"{indent}{_undo_id(step)}[{_text(_undo_label(step))}]")
        if open_group is not None:
            lines.append("        end")
        lines.append("    end")
        for position, step in enumerate(self.compensable):
            after = (
                _undo_id(self.compensable[position + 1])
                if position + 1 < len(self.compensable)
                else COMPENSATED
            )
            lines.append(f"    {_undo_id(step)} -.->|{_text(_types(step.compensated_on))}| {after}")
            gave_up = _timeout(step.undo_timeout, step.compensation_max_attempts)
            if step.compensation_fails_on:
                gave_up = f"{_types(step.compensation_fails_on)} or {gave_up}"
            lines.append(f"    {_undo_id(step)} -.->|{_text(gave_up)}| {FAILED}")
        return lines


def _members(stage: Stage[Any]) -> Sequence[Member[Any]]:
    return stage.members() if isinstance(stage, Parallel) else (stage,)


def _compensation_of(step: Member[Any]) -> bool:
    return not isinstance(step, Wait) and step.compensation is not None


def _node(step: Member[Any]) -> str:
    """A step's node: a box for a command, a parallelogram for a wait, a subroutine for a
    child saga."""
    node = _step_id(step)
    if isinstance(step, Wait):
        return f"{node}[/{_text(f'{step.name}<br/>waits for {step.event.message_type}')}/]"
    if isinstance(step, Child):
        label = f"{step.name}<br/>child saga {step.saga}<br/>{step.starts.message_type}"
        return f"{node}[[{_text(label)}]]"
    sends = f"<br/>{step.sends.message_type}" if step.sends is not None else ""
    return f"{node}[{_text(step.name + sends)}]"


def _undo_label(step: Undoable) -> str:
    sends = (
        f"<br/>{step.compensation_sends.message_type}"
        if step.compensation_sends is not None
        else ""
    )
    return f"undo {step.name}{sends}"


def _retry(retry: RetryOn) -> str:
    return (
        f"retry on {_types(retry.transient)}<br/>{retry.attempts} attempts, "
        f"backoff {_duration(retry.backoff)} doubling, at most {_duration(retry.max_backoff)}"
    )


def _step_id(step: Member[Any]) -> str:
    return "step_" + _safe(step.name)


def _undo_id(step: Undoable) -> str:
    return "undo_" + _safe(step.name)


def _group_id(group: Parallel[Any]) -> str:
    return "group_" + _safe(group.name)


def _fork_id(group: Parallel[Any]) -> str:
    return "fork_" + _safe(group.name)


def _join_id(group: Parallel[Any]) -> str:
    return "join_" + _safe(group.name)


def _undoing_id(group: Parallel[Any]) -> str:
    return "undoing_" + _safe(group.name)


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
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
