"""The label set the simulated-LM tests classify into, one for the task-app and DSPy prompts.

A few real Banking77 intents plus awkward ones (a capital letter, a trailing
"?") so both prompt forms are tested on names that are easy to mangle.
"""

from __future__ import annotations

LABELS = (
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "top_up_failed",
    "Refund_not_showing_up",
    "pin_blocked",
    "reverted_card_payment?",
)
