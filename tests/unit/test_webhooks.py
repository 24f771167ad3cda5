"""Webhook declarations, secrets and signatures (pure: no services).

The routes are tested on the real services in ``tests/integration/test_api_webhooks.py``.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest

from bus_orchestrator.app import App
from bus_orchestrator.errors import DefinitionError
from bus_orchestrator.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Webhook,
    WebhookSecretError,
    load_secret,
    sign,
    signature,
    verify,
)
from contracts import OrderCancelled, ReserveStock

SECRET = b"whsec-unit-test"
BODY = b'{"order_id":"o-1"}'
NOW = 1_767_225_600.0


def cancelled(payload: Any) -> dict[str, Any]:
    return {"order_id": payload["order_id"]}


HOOK = Webhook("shop-cancel", event=OrderCancelled, map=cancelled)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_in_lower_case_hex() -> None:
    # computed independently of the module, as a sender in another language would
    expected = hmac.new(SECRET, b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert signature(SECRET, "1767225600", BODY) == "sha256=" + expected
    assert sign(SECRET, BODY, NOW) == {
        TIMESTAMP_HEADER: "1767225600",
        SIGNATURE_HEADER: "sha256=" + expected,
    }


def test_the_readme_vector() -> None:
    """The example of the README's webhook section (checked there with openssl too)."""
    assert signature(b"whsec-example", "1767225600", b'{"hello":"world"}') == (
        "sha256=c08f4c44ff59eeb08abaf94e7327968b1dbb40afacd1d00a9a8246e6dc92abfe"
    )


@pytest.mark.parametrize(
    ("timestamp", "presented", "body", "now", "reason"),
    [
        ("1767225600", None, BODY, NOW, "missing"),
        (None, "sha256=00", BODY, NOW, "missing"),
        ("1767225600", signature(b"other", "1767225600", BODY), BODY, NOW, "does not match"),
        ("1767225600", signature(SECRET, "1767225600", BODY), BODY + b" ", NOW, "does not match"),
        ("1767225601", signature(SECRET, "1767225600", BODY), BODY, NOW, "does not match"),
        ("1767225600", signature(SECRET, "1767225600", BODY), BODY, NOW + 301, "seconds off"),
        ("1767225600", signature(SECRET, "1767225600", BODY), BODY, NOW - 301, "seconds off"),
        ("-5", "sha256=00", BODY, NOW, "Unix seconds"),
        ("1767225600", "sha256=é", BODY, NOW, "does not match"),
    ],
)
def test_refusals(
    timestamp: str | None, presented: str | None, body: bytes, now: float, reason: str
) -> None:
    found = verify(SECRET, timestamp, presented, body, now)
    assert found is not None and reason in found
    assert SECRET.decode() not in found


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_accepted_within_five_minutes_either_way(skew: int) -> None:
    headers = sign(SECRET, BODY, NOW)
    presented = headers[SIGNATURE_HEADER].upper().replace("SHA256=", "sha256=")
    assert verify(SECRET, headers[TIMESTAMP_HEADER], presented, BODY, NOW + skew) is None


def test_the_secret_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    assert HOOK.secret_setting == "BUS_WEBHOOK_SECRET_SHOP_CANCEL"
    assert load_secret(HOOK, {"BUS_WEBHOOK_SECRET_SHOP_CANCEL": "abc"}) == b"abc"
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    assert load_secret(HOOK, {"BUS_WEBHOOK_SECRET_SHOP_CANCEL_FILE": str(path)}) == b"from-file"
    assert load_secret(HOOK, {}) is None
    own = Webhook("x", event=OrderCancelled, map=cancelled, secret_env="SHOP_SECRET")
    assert load_secret(own, {"SHOP_SECRET": "mine"}) == b"mine"


def test_an_unreadable_secret_file_is_named_never_its_content(tmp_path: Path) -> None:
    with pytest.raises(WebhookSecretError, match="BUS_WEBHOOK_SECRET_SHOP_CANCEL_FILE"):
        load_secret(HOOK, {"BUS_WEBHOOK_SECRET_SHOP_CANCEL_FILE": str(tmp_path / "none")})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(WebhookSecretError, match="is empty"):
        load_secret(HOOK, {"BUS_WEBHOOK_SECRET_SHOP_CANCEL_FILE": str(empty)})


def test_declarations_are_checked() -> None:
    with pytest.raises(DefinitionError, match="lower-case"):
        Webhook("Shop", event=OrderCancelled, map=cancelled)
    with pytest.raises(DefinitionError, match="Event model"):
        Webhook("shop", event=ReserveStock, map=cancelled)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="webhook names must be unique"):
        App("shop", webhooks=[HOOK, HOOK])


def test_a_webhooks_event_joins_the_apps_contracts() -> None:
    app = App("shop", webhooks=[HOOK])
    assert app.registry.get("orders.order_cancelled.v1") is not None
