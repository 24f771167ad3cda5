"""What a JSON Schema accepts, read for comparison (see ``schema.compat``).

A schema node is split into branches: ``$ref`` is resolved into the root's ``$defs``,
``anyOf``/``oneOf`` give one branch per alternative, and ``allOf`` is merged key by key (an
approximation of its intersection; pydantic v2 does not emit ``allOf``). Each branch knows
the JSON types it accepts and, when an ``enum`` or ``const`` restricts it, the values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bus_orchestrator.errors import ContractCheckError

JSON_TYPES = frozenset({"array", "boolean", "integer", "null", "number", "object", "string"})

_MAX_DEPTH = 64
_DEFS = "#/$defs/"


@dataclass(frozen=True)
class Branch:
    """One alternative of a schema node, with ``$ref`` and the combinators resolved away."""

    schema: Mapping[str, Any]
    types: frozenset[str]
    values: Mapping[str, frozenset[str]] | None
    """Allowed values (as canonical JSON) by JSON type, when an enum or const restricts them."""
    ref: str | None
    """The ``$defs`` entry the branch came from, if any."""


def branches(
    node: Any, root: Mapping[str, Any], ref: str | None = None, depth: int = 0
) -> list[Branch]:
    """The alternatives ``node`` accepts. An absent schema (``None``) or ``true`` accepts all,
    ``false`` nothing."""
    if node is False:
        return []
    if not isinstance(node, Mapping) or depth > _MAX_DEPTH:
        return [Branch({}, JSON_TYPES, None, ref)]
    if "$ref" in node:
        name, target = _resolve(node["$ref"], root)
        siblings = _without(node, "$ref")
        if "title" in as_mapping(target):
            # The model's own title names the branch (for pairing), not the field's.
            siblings.pop("title", None)
        return branches(_merge(target, siblings), root, name, depth + 1)
    if "allOf" in node:
        merged = _without(node, "allOf")
        for part in node["allOf"]:
            if part is False:
                return []
            merged = _merge(merged, _dereferenced(part, root))
        return branches(merged, root, ref, depth + 1)
    for keyword in ("anyOf", "oneOf"):
        if keyword in node:
            base = _without(node, keyword)
            return [
                branch
                for alternative in node[keyword]
                if alternative is not False
                for branch in branches(_merge(base, alternative), root, ref, depth + 1)
            ]
    declared = _declared_types(node)
    values = _enum_values(node, declared)
    return [Branch(node, declared if values is None else frozenset(values), values, ref)]


def accepted_types(alternatives: list[Branch]) -> frozenset[str]:
    return frozenset().union(*(branch.types for branch in alternatives))


def accepts(types: frozenset[str], json_type: str) -> bool:
    """Whether a value of ``json_type`` passes ``types`` (an integer is also a number)."""
    return json_type in types or (json_type == "integer" and "number" in types)


def allowed_values(alternatives: list[Branch], json_type: str) -> frozenset[str] | None:
    """The values of ``json_type`` the branches allow; ``None`` when any value is."""
    allowed: set[str] = set()
    for branch in alternatives:
        if json_type not in branch.types:
            continue
        if branch.values is None:
            return None
        allowed |= branch.values.get(json_type, frozenset())
    return frozenset(allowed)


@dataclass(frozen=True)
class Pairing:
    """How the alternatives of one JSON type line up between an old and a new schema."""

    pairs: list[tuple[str | None, Branch, Branch]]
    """(title when there were several alternatives, old branch, new branch)."""
    removed: list[str]
    added: list[str]


def pair_up(old: list[Branch], new: list[Branch], json_type: str) -> Pairing:
    """Which old branch to compare with which new one, for one JSON type."""
    old_of_type = [branch for branch in old if json_type in branch.types]
    new_of_type = [branch for branch in new if json_type in branch.types]
    if len(old_of_type) == 1 and len(new_of_type) == 1:
        return Pairing([(None, old_of_type[0], new_of_type[0])], [], [])
    # Several alternatives of one type (a union of models) pair up by title; alternatives
    # come and go only as far as every one of them has a title of its own.
    old_titled, new_titled = _unique_by_title(old_of_type), _unique_by_title(new_of_type)
    pairs: list[tuple[str | None, Branch, Branch]] = [
        (title, old_titled[title], new_titled[title])
        for title in sorted(old_titled.keys() & new_titled.keys())
    ]
    if len(old_titled) < len(old_of_type) or len(new_titled) < len(new_of_type):
        return Pairing(pairs, [], [])
    removed = sorted(old_titled.keys() - new_titled.keys())
    return Pairing(pairs, removed, sorted(new_titled.keys() - old_titled.keys()))


def canonical(value: Any) -> str:
    """A JSON value as comparable text: ``"red"``, ``1``, ``null``."""
    return json.dumps(value, sort_keys=True, default=str)


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _resolve(pointer: Any, root: Mapping[str, Any]) -> tuple[str, Any]:
    if not isinstance(pointer, str) or not pointer.startswith(_DEFS):
        raise ContractCheckError(f"cannot resolve $ref {pointer!r}: only {_DEFS}* is supported")
    name = pointer.removeprefix(_DEFS)
    definitions = as_mapping(root.get("$defs"))
    if name not in definitions:
        raise ContractCheckError(f"$ref {pointer!r} points to no definition")
    return name, definitions[name]


def _dereferenced(node: Any, root: Mapping[str, Any]) -> Any:
    for _ in range(_MAX_DEPTH):
        if not isinstance(node, Mapping) or "$ref" not in node:
            return node
        _, target = _resolve(node["$ref"], root)
        node = _merge(target, _without(node, "$ref"))
    return node


def _merge(base: Any, extra: Any) -> dict[str, Any]:
    """``base`` with ``extra``'s keywords on top; ``type``s intersect, ``required``s add up."""
    merged = dict(as_mapping(base))
    for key, value in as_mapping(extra).items():
        if key == "type" and "type" in merged:
            merged["type"] = sorted(_declared_types(merged) & _declared_types({"type": value}))
        elif key == "required" and "required" in merged:
            merged["required"] = sorted({*merged["required"], *value})
        elif key == "properties" and "properties" in merged:
            merged["properties"] = {**merged["properties"], **value}
        else:
            merged[key] = value
    return merged


def _without(node: Mapping[str, Any], keyword: str) -> dict[str, Any]:
    return {key: value for key, value in node.items() if key != keyword}


def _declared_types(node: Mapping[str, Any]) -> frozenset[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return frozenset({declared}) & JSON_TYPES
    if isinstance(declared, list):
        return frozenset(declared) & JSON_TYPES
    return JSON_TYPES


def _enum_values(
    node: Mapping[str, Any], declared: frozenset[str]
) -> dict[str, frozenset[str]] | None:
    if "const" in node:
        values = [node["const"]]
    elif isinstance(node.get("enum"), list):
        values = node["enum"]
    else:
        return None
    by_type: dict[str, set[str]] = {}
    for value in values:
        json_type = _json_type(value)
        if json_type == "integer" and json_type not in declared:
            json_type = "number"
        if json_type in declared:  # a value of an undeclared type can never validate
            by_type.setdefault(json_type, set()).add(canonical(value))
    return {json_type: frozenset(found) for json_type, found in by_type.items()}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list | tuple) else "object"


def _unique_by_title(alternatives: list[Branch]) -> dict[str, Branch]:
    titles = [branch.schema.get("title") or branch.ref for branch in alternatives]
    return {
        title: branch
        for title, branch in zip(titles, alternatives, strict=True)
        if isinstance(title, str) and titles.count(title) == 1
    }
