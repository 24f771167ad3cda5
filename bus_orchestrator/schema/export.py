"""Writing the contracts to files: ``asyncapi.yaml`` and ``schemas/<type>.json``.

The output is deterministic (same registry and participants, same bytes: fixed key order,
no timestamps), so the files can be committed and a test can tell when they are stale.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from bus_orchestrator.core.messages import ContractRegistry
from bus_orchestrator.schema.asyncapi import asyncapi_document
from bus_orchestrator.schema.jsonschema import message_schema
from bus_orchestrator.schema.participants import Participant

ASYNCAPI_FILE = "asyncapi.yaml"
SCHEMAS_DIR = "schemas"
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Dumper(yaml.SafeDumper):
    """SafeDumper writing multi-line strings as literal blocks, so markdown stays legible."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(document: dict[str, Any]) -> str:
    """``document`` as YAML, keys in the document's own order, with no anchors."""
    # The JSON round trip gives fresh containers (no shared objects, hence no YAML
    # anchors) and proves the document is plain JSON data.
    plain = json.loads(json.dumps(document, ensure_ascii=False))
    text: str = yaml.dump(
        plain,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        default_flow_style=False,
    )
    return text


def dump_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _write(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    # Leave an unchanged file alone, so its timestamp says when the contract last changed.
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def export_contracts(
    registry: ContractRegistry,
    participants: Iterable[Participant],
    out_dir: Path,
    *,
    title: str,
    version: str,
    app_id: str,
    description: str = "",
) -> list[Path]:
    """Write ``out_dir/asyncapi.yaml`` and one ``out_dir/schemas/<type>.json`` per type.

    Schema files of types no longer registered are deleted. Returns the paths of the
    export (the document first, then the schemas by type), whether or not their content
    changed.
    """
    document = asyncapi_document(
        registry, participants, title=title, version=version, app_id=app_id, description=description
    )
    schemas = {c.message_type: message_schema(c, app_id) for c in registry}
    for message_type in schemas:
        if not _SAFE_FILE_NAME.match(message_type):
            raise ValueError(f"message type {message_type!r} cannot be used as a file name")

    schema_dir = out_dir / SCHEMAS_DIR
    schema_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / ASYNCAPI_FILE]
    _write(written[0], dump_yaml(document))
    for message_type, schema in schemas.items():
        path = schema_dir / f"{message_type}.json"
        _write(path, dump_json(schema))
        written.append(path)
    current = set(written)
    for stale in sorted(schema_dir.glob("*.json")):
        if stale not in current:
            stale.unlink()
    return written
