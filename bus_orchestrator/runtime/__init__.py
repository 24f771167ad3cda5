"""The loops: message handling (one transaction per message), the outbox relay, timers."""
