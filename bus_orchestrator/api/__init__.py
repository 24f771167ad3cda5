"""The HTTP API (FastAPI): read-only routes over the sagas of the app the process runs."""

from bus_orchestrator.api.app import create_api
from bus_orchestrator.api.auth import ApiConfigError, ApiTokens, Role, load_tokens

__all__ = ["ApiConfigError", "ApiTokens", "Role", "create_api", "load_tokens"]
