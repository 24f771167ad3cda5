"""``python -m bus_orchestrator`` is the ``bus-orchestrator`` command."""

from bus_orchestrator.cli import main

main()
