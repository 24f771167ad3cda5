"""The engine's events about the order-to-cash saga: its end, and a request to cancel it.

The engine makes these models from the saga's name (``bus_orchestrator.core.lifecycle``);
they are named here so the domain's contracts, and any system reacting to an order's end,
use them like any other event.
"""

from bus_orchestrator.core.lifecycle import cancel_event, end_event

ORDER_TO_CASH = "order_to_cash"
"""The name of the order-to-cash saga: it names the saga's rows and these events' types."""

OrderToCashCompleted = end_event(ORDER_TO_CASH, "completed")
OrderToCashCompensated = end_event(ORDER_TO_CASH, "compensated")
OrderToCashFailed = end_event(ORDER_TO_CASH, "failed")
OrderToCashCancelRequested = cancel_event(ORDER_TO_CASH)
