"""One self-contained JSON Schema (2020-12) per registered message type.

The schema describes what the engine accepts (pydantic's validation schema), so a team in
another language can validate a message before sending it. ``x-*`` keys say where it goes.
"""

from __future__ import annotations

from typing import Any

from bus_orchestrator.core.messages import Contract, ContractRegistry

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def message_schema(contract: Contract, app_id: str) -> dict[str, Any]:
    """The JSON Schema of one message type's ``data``, with its ``$defs`` inline; its
    ``$id`` names the application (``app_id``) whose contract it is."""
    body = contract.model.model_json_schema(mode="validation")
    return {
        "$schema": DIALECT,
        "$id": f"urn:{app_id}:contract:{contract.message_type}",
        "x-message-type": contract.message_type,
        "x-kind": str(contract.kind),
        "x-version": contract.version,
        "x-exchange": contract.exchange,
        "x-routing-key": contract.message_type,
        **body,
    }


def registry_schemas(registry: ContractRegistry, app_id: str) -> dict[str, dict[str, Any]]:
    """Every registered type's schema, by type string, in type order."""
    return {contract.message_type: message_schema(contract, app_id) for contract in registry}
