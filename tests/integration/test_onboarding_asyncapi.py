"""The onboarding app's committed AsyncAPI document passes ``@asyncapi/parser`` 3 too."""

from __future__ import annotations

from pathlib import Path

import pytest

from example import create_onboarding_app
from tests.integration.test_asyncapi_parser import (
    ERROR,
    INSTALL_TIMEOUT,
    described,
    parse,
    parser_modules,
)

__all__ = ["parser_modules"]  # the fixture, shared with the order-to-cash document's test

DOCUMENT = Path(__file__).resolve().parents[2] / "contracts" / "onboarding" / "asyncapi.yaml"


@pytest.mark.timeout(INSTALL_TIMEOUT + 60)
def test_committed_onboarding_document_passes_the_asyncapi_parser(parser_modules: Path) -> None:
    result = parse(parser_modules, DOCUMENT)
    errors = [d for d in result["diagnostics"] if d["severity"] == ERROR]
    assert not errors, f"{DOCUMENT}: {len(errors)} errors\n{described(errors)}"
    types = len(list(create_onboarding_app().registry))
    assert result["channels"] == result["messages"] == types
    assert result["operations"] > types  # each type is sent by one party, received by one or more
