"""``bus-orchestrator webhooks``: the app's webhooks, and signing a request to one (to try
a webhook with curl, or to check a sender's signature by hand)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bus_orchestrator.webhooks import WebhookSecretError, load_secret, sign

webhooks_app = typer.Typer(help="The app's webhooks (POST /webhooks/{name} of the HTTP API).")
console = Console()
errors = Console(stderr=True, soft_wrap=True)

AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        envvar="BUS_APP",
        metavar="MODULE:ATTRIBUTE",
        help="the application: an App object or a factory of one, e.g. onboarding.app:app",
    ),
]


@webhooks_app.command("list")
def list_webhooks(app_ref: AppOption = None) -> None:
    """Each webhook: its event, the variable holding its secret, and whether it is set
    in this environment (never the secret)."""
    from bus_orchestrator.cli import _app, _settings

    application = _app(app_ref, _settings())
    table = Table("name", "event", "secret", "set")
    for webhook in application.webhooks:
        try:
            present = "yes" if load_secret(webhook) is not None else "no"
        except WebhookSecretError:
            present = "unreadable"
        table.add_row(webhook.name, webhook.event.message_type, webhook.secret_setting, present)
    console.print(table)


@webhooks_app.command("sign")
def sign_request(
    name: Annotated[str, typer.Argument(help="the webhook")],
    body: Annotated[
        str, typer.Option("--body", help="a file holding the request body exactly; - for stdin")
    ],
    at: Annotated[
        int | None, typer.Option("--at", help="the timestamp, Unix seconds (default: now)")
    ] = None,
    app_ref: AppOption = None,
) -> None:
    """Print the headers that sign BODY for webhook NAME with its secret (from
    BUS_WEBHOOK_SECRET_<NAME>), one per line, e.g. for curl -H @file."""
    from bus_orchestrator.cli import _app, _fail, _settings

    application = _app(app_ref, _settings())
    found = [w for w in application.webhooks if w.name == name]
    if not found:
        known = ", ".join(w.name for w in application.webhooks) or "none"
        _fail(f"app {application.name!r} has no webhook {name!r} (it has: {known})")
    webhook = found[0]
    try:
        secret = load_secret(webhook)
    except WebhookSecretError as exc:
        _fail(str(exc))
    if secret is None:
        _fail(f"webhook {name!r} has no secret here: set {webhook.secret_setting}")
    try:
        raw = sys.stdin.buffer.read() if body == "-" else Path(body).read_bytes()
    except OSError as exc:
        errors.print(f"[bold red]cannot read {escape(body)}: {escape(exc.strerror or '')}[/]")
        raise typer.Exit(2) from None
    for header, value in sign(secret, raw, time.time() if at is None else at).items():
        sys.stdout.write(f"{header}: {value}\n")
