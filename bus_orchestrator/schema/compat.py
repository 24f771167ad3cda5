"""What changed between two sets of message JSON Schemas, and which changes break senders.

Within one version (one type string) a contract may only grow: everything a sender built
against the baseline could send must still be accepted. So removing a field, requiring a new
one, narrowing a type, an enum or a constraint, or starting to reject unknown fields is
breaking; such a change needs a new version (``.v2``) next to the old one. Adding an optional
field, widening, or adding message types and versions is compatible.

Schemas are compared by what they accept, not by how they are spelled: ``$ref`` is resolved
into ``$defs``, ``anyOf``/``oneOf`` are split into branches, and each field is judged by the
set of JSON types it accepts. Two things are judged conservatively: a changed ``pattern`` or
``format`` counts as narrowed (proving one regular expression accepts what another did is not
cheap), and ``allOf`` is merged key by key rather than intersected exactly. Where a field is a
union of several objects (or several arrays), its alternatives pair up by title; when they
have none, only the accepted JSON types are compared.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from bus_orchestrator.errors import ContractCheckError
from bus_orchestrator.schema import shapes
from bus_orchestrator.schema.shapes import JSON_TYPES, Branch

ROUTING_KEYS = ("x-kind", "x-exchange", "x-routing-key")
ANNOTATION_FORMATS = frozenset({"password", "binary"})
"""Formats pydantic emits without validating them (``SecretStr``, ``bytes``): not constraints."""


class ChangeKind(StrEnum):
    """What changed; whether it breaks is fixed per kind (see ``BREAKING_KINDS``)."""

    MESSAGE_REMOVED = "message_removed"
    MESSAGE_ADDED = "message_added"
    VERSION_ADDED = "version_added"
    ROUTING_CHANGED = "routing_changed"
    FIELD_REMOVED = "field_removed"
    FIELD_ADDED = "field_added"
    REQUIRED_FIELD_ADDED = "required_field_added"
    FIELD_BECAME_REQUIRED = "field_became_required"
    FIELD_BECAME_OPTIONAL = "field_became_optional"
    TYPE_CHANGED = "type_changed"
    TYPE_WIDENED = "type_widened"
    ENUM_NARROWED = "enum_narrowed"
    ENUM_WIDENED = "enum_widened"
    EXTRA_FORBIDDEN = "additional_properties_forbidden"
    EXTRA_ALLOWED = "additional_properties_allowed"
    CONSTRAINT_NARROWED = "constraint_narrowed"
    CONSTRAINT_RELAXED = "constraint_relaxed"
    DEFAULT_CHANGED = "default_changed"


BREAKING_KINDS = frozenset(
    {
        ChangeKind.MESSAGE_REMOVED,
        ChangeKind.ROUTING_CHANGED,
        ChangeKind.FIELD_REMOVED,
        ChangeKind.REQUIRED_FIELD_ADDED,
        ChangeKind.FIELD_BECAME_REQUIRED,
        ChangeKind.TYPE_CHANGED,
        ChangeKind.ENUM_NARROWED,
        ChangeKind.EXTRA_FORBIDDEN,
        ChangeKind.CONSTRAINT_NARROWED,
    }
)


@dataclass(frozen=True)
class Change:
    """One difference in one message type.

    ``path`` names the field: ``shipping_address.country``, ``items[].sku`` (any element),
    ``pair[0]`` (a tuple position), ``tags{}`` (any value of a map), ``method<Card>.last4``
    (one alternative of a union); ``""`` is the message itself.
    """

    message_type: str
    path: str
    kind: ChangeKind
    breaking: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": str(self.kind)}


def compare(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[Change]:
    """Every change from ``baseline`` to ``current`` (schemas by type string), sorted."""
    changes: list[Change] = []
    for message_type in sorted(baseline.keys() - current.keys()):
        changes.append(_change(message_type, "", ChangeKind.MESSAGE_REMOVED, "no longer defined"))
    for message_type in sorted(current.keys() - baseline.keys()):
        family = _family(message_type)
        siblings = sorted(t for t in baseline if _family(t) == family)
        if siblings:
            detail = f"new version of {family} (baseline has {', '.join(siblings)})"
            changes.append(_change(message_type, "", ChangeKind.VERSION_ADDED, detail))
        else:
            changes.append(_change(message_type, "", ChangeKind.MESSAGE_ADDED, "new message type"))
    for message_type in sorted(baseline.keys() & current.keys()):
        old, new = baseline[message_type], current[message_type]
        changes += _routing_changes(message_type, old, new)
        changes += _Comparison(message_type, old, new).run()
    # set(): a field whose branch accepts both integer and number is walked once per type.
    return sorted(set(changes), key=lambda c: (c.message_type, c.path, c.kind, c.detail))


def breaking(changes: Iterable[Change]) -> list[Change]:
    """The breaking ones, in the order given."""
    return [change for change in changes if change.breaking]


def report(changes: Iterable[Change]) -> str:
    """A text report: one block per message type (those with breaking changes first), breaking
    changes first within a block, then a summary line."""
    changes = list(changes)
    if not changes:
        return "No contract changes."
    width = max(len(change.kind) for change in changes)
    lines: list[str] = []
    for message_type, group in _groups(changes):
        lines.append(message_type)
        for change in group:
            mark = "BREAKING  " if change.breaking else "compatible"
            path = change.path or "(message)"
            lines.append(f"  {mark}  {change.kind:<{width}}  {path}: {change.detail}")
        lines.append("")
    lines.append(_summary(changes))
    return "\n".join(lines)


def report_json(changes: Iterable[Change]) -> dict[str, Any]:
    """The report as JSON-able data: counts and every change."""
    changes = list(changes)
    count = len(breaking(changes))
    return {
        "breaking": count,
        "compatible": len(changes) - count,
        "message_types": len({change.message_type for change in changes}),
        "changes": [change.as_dict() for change in changes],
    }


def load_baseline(
    against: str, *, repo: Path, schemas_dir: str = "contracts/schemas"
) -> dict[str, dict[str, Any]]:
    """The baseline schemas by type string: the ``*.json`` files of directory ``against`` if
    there is one, else of ``schemas_dir`` at git ref ``against`` of ``repo``.

    The type string is the schema's ``x-message-type`` (else the file name without ``.json``).
    Raises ``ContractCheckError`` for an unknown ref, a ref without ``schemas_dir``, a
    baseline without any schema, or a file that is not a JSON object.
    """
    directory = Path(against)
    if directory.is_dir():
        files = [(path.name, path.read_text(encoding="utf-8")) for path in directory.glob("*.json")]
        source = str(directory)
    else:
        files = _files_at_ref(against, repo, schemas_dir)
        source = f"{against}:{schemas_dir}"
    if not files:
        # Against nothing, every message type would be "new" and the check would pass.
        raise ContractCheckError(
            f"{source} holds no schemas (*.json): point --against at a folder or git ref "
            "with the schemas `bus-orchestrator contracts export` writes"
        )
    return _index(files, source=source)


# -- comparing one message type ------------------------------------------------------------


class _Comparison:
    def __init__(self, message_type: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        self.message_type = message_type
        self.old_root = old
        self.new_root = new
        self.changes: list[Change] = []
        self._active: set[tuple[str, str]] = set()

    def run(self) -> list[Change]:
        self._node(self.old_root, self.new_root, "")
        return self.changes

    def _add(self, path: str, kind: ChangeKind, detail: str) -> None:
        self.changes.append(_change(self.message_type, path, kind, detail))

    def _node(self, old: Any, new: Any, path: str) -> None:
        old_branches = shapes.branches(old, self.old_root)
        new_branches = shapes.branches(new, self.new_root)
        old_types = shapes.accepted_types(old_branches)
        new_types = shapes.accepted_types(new_branches)
        lost = {t for t in old_types if not shapes.accepts(new_types, t)}
        gained = {t for t in new_types if not shapes.accepts(old_types, t)}
        detail = f"accepts {_types_text(old_types)} -> {_types_text(new_types)}"
        if lost:
            self._add(path, ChangeKind.TYPE_CHANGED, f"{detail} (no longer {_types_text(lost)})")
        elif gained:
            self._add(path, ChangeKind.TYPE_WIDENED, detail)
        common = sorted(old_types & new_types)
        self._values(old_branches, new_branches, common, path)
        for json_type in common:
            pairing = shapes.pair_up(old_branches, new_branches, json_type)
            for gone in pairing.removed:
                self._add(path, ChangeKind.TYPE_CHANGED, f"{json_type} alternative {gone} removed")
            for new_one in pairing.added:
                self._add(path, ChangeKind.TYPE_WIDENED, f"{json_type} alternative {new_one} added")
            for title, old_branch, new_branch in pairing.pairs:
                branch_path = path if title is None else f"{path}<{title}>"
                self._branch(json_type, old_branch, new_branch, branch_path)

    def _values(self, old: list[Branch], new: list[Branch], types: list[str], path: str) -> None:
        removed: set[str] = set()
        added: set[str] = set()
        restricted: set[str] = set()
        lifted: set[str] = set()
        for json_type in types:
            old_values = shapes.allowed_values(old, json_type)
            new_values = shapes.allowed_values(new, json_type)
            if old_values is None and new_values is not None:
                restricted |= new_values
            elif old_values is not None and new_values is None:
                lifted |= old_values
            elif old_values is not None and new_values is not None:
                removed |= old_values - new_values
                added |= new_values - old_values
        if restricted or removed:
            parts = [f"now only {_values_text(restricted)}"] if restricted else []
            parts += [f"removed {_values_text(removed)}"] if removed else []
            parts += [f"added {_values_text(added)}"] if added else []
            self._add(path, ChangeKind.ENUM_NARROWED, "; ".join(parts))
        elif added or lifted:
            parts = [f"added {_values_text(added)}"] if added else []
            parts += [f"no longer limited to {_values_text(lifted)}"] if lifted else []
            self._add(path, ChangeKind.ENUM_WIDENED, "; ".join(parts))

    def _branch(self, json_type: str, old: Branch, new: Branch, path: str) -> None:
        if old.ref is not None and new.ref is not None:
            # A recursive model refers to itself; once inside a pair of definitions, the same
            # pair further down has nothing new to say.
            if (old.ref, new.ref) in self._active:
                return
            self._active.add((old.ref, new.ref))
        try:
            self._constraints(json_type, old.schema, new.schema, path)
            if json_type == "object":
                self._object(old.schema, new.schema, path)
            elif json_type == "array":
                self._array(old.schema, new.schema, path)
        finally:
            if old.ref is not None and new.ref is not None:
                self._active.discard((old.ref, new.ref))

    def _object(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old_fields = shapes.as_mapping(old.get("properties"))
        new_fields = shapes.as_mapping(new.get("properties"))
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        for name in sorted(old_fields.keys() | new_fields.keys()):
            field_path = f"{path}.{name}" if path else name
            if name not in new_fields:
                was = "required" if name in old_required else "optional"
                self._add(field_path, ChangeKind.FIELD_REMOVED, f"removed (was {was})")
            elif name not in old_fields:
                if name in new_required:
                    self._add(field_path, ChangeKind.REQUIRED_FIELD_ADDED, "new required field")
                else:
                    self._add(field_path, ChangeKind.FIELD_ADDED, "new optional field")
            else:
                if name in new_required and name not in old_required:
                    self._add(field_path, ChangeKind.FIELD_BECAME_REQUIRED, "was optional")
                elif name in old_required and name not in new_required:
                    self._add(field_path, ChangeKind.FIELD_BECAME_OPTIONAL, "was required")
                self._default(old_fields[name], new_fields[name], field_path)
                self._node(old_fields[name], new_fields[name], field_path)
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if old_extra is not False and new_extra is False:
            self._add(path, ChangeKind.EXTRA_FORBIDDEN, "unknown fields now rejected")
        elif old_extra is False and new_extra is not False:
            self._add(path, ChangeKind.EXTRA_ALLOWED, "unknown fields now accepted")
        elif isinstance(old_extra, Mapping) or isinstance(new_extra, Mapping):
            # A map (``dict[str, X]``): its values have a schema of their own.
            self._node(old_extra, new_extra, f"{path}{{}}")

    def _array(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        old_prefix, new_prefix = old.get("prefixItems") or [], new.get("prefixItems") or []
        old_rest, new_rest = old.get("items"), new.get("items")
        # Position i is checked by prefixItems[i] if there is one, else by items.
        for index in range(max(len(old_prefix), len(new_prefix))):
            old_item = old_prefix[index] if index < len(old_prefix) else old_rest
            new_item = new_prefix[index] if index < len(new_prefix) else new_rest
            self._node(old_item, new_item, f"{path}[{index}]")
        if old_rest is not None or new_rest is not None:
            self._node(old_rest, new_rest, f"{path}[]")

    def _default(self, old: Any, new: Any, path: str) -> None:
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            if "default" in old and "default" in new and old["default"] != new["default"]:
                before, after = shapes.canonical(old["default"]), shapes.canonical(new["default"])
                self._add(path, ChangeKind.DEFAULT_CHANGED, f"default {before} -> {after}")

    def _constraints(
        self, json_type: str, old: Mapping[str, Any], new: Mapping[str, Any], path: str
    ) -> None:
        for label, lower, upper in _BOUNDS.get(json_type, ()):
            for is_lower, keys in ((True, lower), (False, upper)):
                old_bound, new_bound = _bound(old, *keys), _bound(new, *keys)
                if old_bound == new_bound:
                    continue
                tighter = _tighter(new_bound, old_bound, lower=is_lower)
                kind = ChangeKind.CONSTRAINT_NARROWED if tighter else ChangeKind.CONSTRAINT_RELAXED
                side = _bound_text(old_bound, is_lower), _bound_text(new_bound, is_lower)
                self._add(path, kind, f"{label} {side[0]} -> {side[1]}")
        if json_type in ("integer", "number"):
            self._multiple_of(old.get("multipleOf"), new.get("multipleOf"), path)
        if json_type == "array" and bool(old.get("uniqueItems")) != bool(new.get("uniqueItems")):
            narrowed = bool(new.get("uniqueItems"))
            kind = ChangeKind.CONSTRAINT_NARROWED if narrowed else ChangeKind.CONSTRAINT_RELAXED
            self._add(path, kind, "items must be unique" if narrowed else "items may repeat")
        if json_type == "string":
            self._keyword("pattern", old.get("pattern"), new.get("pattern"), path)
            old_format, new_format = _format(old), _format(new)
            self._keyword("format", old_format, new_format, path)

    def _keyword(self, name: str, old: Any, new: Any, path: str) -> None:
        if old == new:
            return
        if new is None:
            self._add(path, ChangeKind.CONSTRAINT_RELAXED, f"{name} {old!r} dropped")
        elif old is None:
            self._add(path, ChangeKind.CONSTRAINT_NARROWED, f"{name} {new!r} added")
        else:
            self._add(path, ChangeKind.CONSTRAINT_NARROWED, f"{name} {old!r} -> {new!r}")

    def _multiple_of(self, old: Any, new: Any, path: str) -> None:
        if old == new or not (_is_number(old) or _is_number(new)):
            return
        if not _is_number(new):
            self._add(path, ChangeKind.CONSTRAINT_RELAXED, f"multipleOf {old} dropped")
            return
        # Still compatible when every old multiple is a new one: old is a multiple of new.
        narrowed = not _is_number(old) or not _divides(new, old)
        kind = ChangeKind.CONSTRAINT_NARROWED if narrowed else ChangeKind.CONSTRAINT_RELAXED
        self._add(path, kind, f"multipleOf {old} -> {new}")


# -- constraints -----------------------------------------------------------------------------

_BOUNDS: dict[str, tuple[tuple[str, tuple[str, str], tuple[str, str]], ...]] = {
    "string": (("length", ("minLength", ""), ("maxLength", "")),),
    "integer": (("value", ("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")),),
    "number": (("value", ("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")),),
    "array": (("item count", ("minItems", ""), ("maxItems", "")),),
    "object": (("field count", ("minProperties", ""), ("maxProperties", "")),),
}
"""Per JSON type: (label, (inclusive, exclusive) lower keywords, (...) upper keywords)."""

_Bound = tuple[float, bool]
"""A limit and whether it is exclusive."""


def _bound(schema: Mapping[str, Any], inclusive: str, exclusive: str) -> _Bound | None:
    """The tighter of the inclusive and the exclusive limit (``exclusive`` may be ``""``)."""
    found = [(float(schema[inclusive]), False)] if _is_number(schema.get(inclusive)) else []
    if exclusive and _is_number(schema.get(exclusive)):
        found.append((float(schema[exclusive]), True))
    if not found:
        return None
    if inclusive.startswith("min"):
        return max(found)
    return min(found, key=lambda bound: (bound[0], not bound[1]))


def _tighter(new: _Bound | None, old: _Bound | None, *, lower: bool) -> bool:
    """Whether ``new`` rejects something ``old`` accepted."""
    if new is None:
        return False
    if old is None:
        return True
    if lower:
        return new > old
    return (new[0], not new[1]) < (old[0], not old[1])


def _bound_text(bound: _Bound | None, lower: bool) -> str:
    if bound is None:
        return "unbounded"
    value, exclusive = bound
    sign = (">" if lower else "<") + ("" if exclusive else "=")
    return f"{sign} {_number_text(value)}"


def _format(schema: Mapping[str, Any]) -> Any:
    value = schema.get("format")
    return None if value in ANNOTATION_FORMATS else value


def _divides(divisor: Any, value: Any) -> bool:
    try:
        return Decimal(str(value)) % Decimal(str(divisor)) == 0
    except (InvalidOperation, ZeroDivisionError):
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- small pieces ----------------------------------------------------------------------------


def _change(message_type: str, path: str, kind: ChangeKind, detail: str) -> Change:
    return Change(message_type, path, kind, kind in BREAKING_KINDS, detail)


def _family(message_type: str) -> str:
    head, _, last = message_type.rpartition(".")
    return head if head and last.startswith("v") and last[1:].isdigit() else message_type


def _routing_changes(
    message_type: str, old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[Change]:
    moved = [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in ROUTING_KEYS
        if old.get(key) != new.get(key)
    ]
    if not moved:
        return []
    return [_change(message_type, "", ChangeKind.ROUTING_CHANGED, "; ".join(moved))]


def _types_text(types: Iterable[str]) -> str:
    types = frozenset(types)
    if types == JSON_TYPES:
        return "anything"
    return " | ".join(sorted(types)) if types else "nothing"


def _values_text(values: Iterable[str]) -> str:
    return ", ".join(sorted(values))


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def _groups(changes: list[Change]) -> list[tuple[str, list[Change]]]:
    by_type: dict[str, list[Change]] = {}
    for change in changes:
        by_type.setdefault(change.message_type, []).append(change)
    groups = [
        (message_type, sorted(group, key=lambda c: not c.breaking))
        for message_type, group in by_type.items()
    ]
    return sorted(groups, key=lambda item: (not item[1][0].breaking, item[0]))


def _summary(changes: list[Change]) -> str:
    count = len(breaking(changes))
    types = len({change.message_type for change in changes})
    noun = "message type" if types == 1 else "message types"
    return f"{count} breaking, {len(changes) - count} compatible in {types} {noun}."


# -- reading a baseline ----------------------------------------------------------------------


def _index(files: Iterable[tuple[str, str]], *, source: str) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for name, text in sorted(files):
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractCheckError(f"{source}/{name} is not valid JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise ContractCheckError(f"{source}/{name} is not a JSON Schema object")
        declared = schema.get("x-message-type")
        message_type = declared if isinstance(declared, str) else name.removesuffix(".json")
        if message_type in schemas:
            raise ContractCheckError(f"{source} defines {message_type!r} twice")
        schemas[message_type] = schema
    return schemas


def _files_at_ref(ref: str, repo: Path, schemas_dir: str) -> list[tuple[str, str]]:
    if not ref or ref.startswith("-"):
        raise ContractCheckError(f"{ref!r} is neither a directory nor a git ref")
    commit = _git(
        repo,
        ["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        failure=f"{ref!r} is neither a directory nor a known git ref of {repo}",
    ).strip()
    folder = schemas_dir.strip("/")
    # ls-tree and "<commit>:./<path>" both take paths relative to repo, which may be a
    # subdirectory of the git work tree.
    listing = _git(
        repo,
        ["ls-tree", "-z", "--name-only", commit, "--", f"{folder}/"],
        failure=f"cannot list {folder}/ at {ref!r}",
    )
    paths = [path for path in listing.split("\0") if path]
    if not paths:
        raise ContractCheckError(f"git ref {ref!r} of {repo} has no {folder}/ directory")
    return [
        (PurePosixPath(path).name, _git(repo, ["show", f"{commit}:./{path}"], failure=path))
        for path in paths
        if path.endswith(".json")
    ]


def _git(repo: Path, args: list[str], *, failure: str) -> str:
    git = shutil.which("git")
    if git is None:
        raise ContractCheckError(f"{failure}: git is not installed")
    # A fixed program and argument list, no shell; _files_at_ref refuses refs that would
    # read as options.
    result = subprocess.run(  # noqa: S603
        [git, "-C", str(repo), *args], capture_output=True, encoding="utf-8", check=False
    )
    if result.returncode != 0:
        reason = result.stderr.strip()
        raise ContractCheckError(f"{failure}: {reason}" if reason else failure)
    return result.stdout
