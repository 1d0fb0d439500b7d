"""A sample batch of support-ticket-like jobs, generated here so the demo needs no data files."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

ITEMS = ["wireless headphones", "standing desk", "coffee grinder", "running shoes", "phone case", "e-reader",
         "backpack", "desk lamp", "water bottle", "keyboard"]
SIMPLE = [
    "Hi, I ordered a {item} on {day} and it still hasn't arrived. Order #{order}. Can you check where it is?",
    "How do I change the delivery address for order #{order}? I moved last week.",
    "The {item} I received is the wrong colour. Can I exchange it?",
    "Do you ship to Norway? I'd like to buy a {item}.",
    "I was charged twice for order #{order}. Please refund one of the charges.",
    "What is your return policy for a {item} bought {weeks} weeks ago?",
    "Can I pay for the {item} in three instalments?",
    "My discount code SAVE{pct} is not accepted at checkout. Why?",
]
TECHNICAL = [
    "Your API returns error code 502 when my script posts to /v2/orders with a {item} SKU. Here is the "
    "traceback: requests.exceptions.HTTPError: 502 Server Error. What am I doing wrong?",
    "Our nightly SQL export of order #{order} fails with an exception about a missing column 'sku'. "
    "Which schema version should the export use?",
    "The webhook for order #{order} arrives twice and our API client raises a duplicate-key exception. "
    "How do we make the handler idempotent?",
]
MULTI_STEP = [
    "Please do the following for order #{order}:\n1. Cancel the {item}.\n2. Refund it to my original card.\n"
    "3. Send me a confirmation e-mail.\n4. Close my account afterwards.",
]
DESIGN = [
    "We are a marketplace with {weeks}00 sellers and want to design a system design for syncing stock with "
    "your platform. What architecture would you recommend, and what are the trade-offs of webhooks versus polling?",
    "Draft a migration plan for moving our {weeks} warehouses from your legacy order API to the new one, "
    "including a threat model for the credentials involved.",
]


def sample_tickets(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    """`count` tickets: mostly simple questions, some technical, multi-step and design ones, some repeated."""
    rng = random.Random(seed)
    kinds = [(SIMPLE, 70), (TECHNICAL, 15), (MULTI_STEP, 7), (DESIGN, 8)]
    pool = [templates for templates, weight in kinds for _ in range(weight)]
    issued: list[str] = []
    for n in range(1, count + 1):
        if issued and rng.random() < 0.1:
            prompt = rng.choice(issued)
        else:
            template = rng.choice(rng.choice(pool))
            prompt = template.format(
                item=rng.choice(ITEMS), order=rng.randint(10_000, 99_999), day=rng.choice(["Monday", "Friday"]),
                weeks=rng.randint(2, 9), pct=rng.choice([10, 15, 20]),
            )
            issued.append(prompt)
        yield {"id": f"ticket-{n:05d}", "prompt": prompt, "metadata": {"source": "demo"}}
