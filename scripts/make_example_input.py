"""Generate jobs/example-input.jsonl: realistic support tickets for the example job.

Deterministic: the same seed and count give the same bytes, so the committed file can be
checked against a fresh run (tests/test_example_job.py does). Each line is in item form:

    {"id": "TCK-100001", "system_ref": "billing", "prompt": "...", "metadata": {...}}

The tickets mix three kinds of request so that routing spreads across the tiers:
- simple: a short ticket with a "classify"/"extract" instruction (the heuristic's nano);
- ordinary: a ticket of a paragraph or two with a neutral instruction (mid);
- complex: an email thread or a long developer report with "analyze"/"debug" instructions
  (frontier).
Urgent tickets and legal threats are sent to frontier by the spec's rules instead.

Usage:
    .venv/bin/python scripts/make_example_input.py                # 400 tickets, the default
    .venv/bin/python scripts/make_example_input.py --items 2000 -o /tmp/tickets.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ticket_texts import AGENT_REPLIES, LOGS, ORDINARY, SHORT, SUBJECTS, TRIED  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "jobs" / "example-input.jsonl"
DEFAULT_ITEMS = 400
DEFAULT_SEED = 20261125

# Which labels arrive in which queue (customers often pick the wrong one), with weights.
QUEUE_TOPICS = {
    "billing": {
        "billing_dispute": 5, "refund_request": 4, "payment_failed": 4, "invoice_request": 4,
        "plan_change": 3, "cancellation": 2, "how_to": 1, "integration_issue": 1, "other": 1,
    },
    "technical": {
        "bug_report": 5, "integration_issue": 5, "performance": 3, "outage": 1,
        "how_to": 3, "feature_request": 3, "login_issue": 1, "billing_dispute": 1,
    },
    "account": {
        "login_issue": 5, "user_management": 4, "data_privacy": 3, "cancellation": 2,
        "how_to": 1, "invoice_request": 1, "other": 1,
    },
}  # fmt: skip
QUEUE_WEIGHTS = {"billing": 38, "technical": 40, "account": 22}
KIND_WEIGHTS = {"simple": 44, "ordinary": 38, "complex": 18}
PRIORITY_WEIGHTS = {"low": 22, "normal": 52, "high": 19, "urgent": 7}
CUSTOMER_TIERS = {"starter": 50, "growth": 38, "enterprise": 12}
CHANNELS = {"web_form": 50, "email": 35, "chat": 15}

SIMPLE_INSTRUCTIONS = [
    "Classify this support ticket.",
    "Classify the ticket below.",
    "Extract the routing label for this ticket.",
    "Classify this ticket for the support queue.",
]
ORDINARY_INSTRUCTIONS = [
    "Label this support ticket so it reaches the right team.",
    "Which team should handle this ticket? Answer with its label.",
    "Read the ticket and choose the label that fits the customer's main request.",
]
THREAD_INSTRUCTIONS = [
    "Analyze the email thread below and compare the customer's requests; label the one "
    "they most need resolved.",
    "Analyze this conversation, compare what the customer asked in each message, and "
    "label the newest request.",
]
LOG_LABELS = ("bug_report", "integration_issue", "performance", "outage")  # have a log form
LOG_INSTRUCTION = (
    "Debug notes and logs from the customer are below. Label the ticket by what the "
    "customer needs, not by the first error in the log."
)

NAMES = [
    "Priya Raman", "Tom Becker", "Ana Souza", "Kenji Watanabe", "Claire Dubois", "Omar Haddad",
    "Lena Fischer", "Marcus Reed", "Sofia Rossi", "David Okafor", "Hannah Lee", "Jonas Berg",
    "Isabel Cruz", "Ravi Patel", "Emma Walsh", "Mateo Garcia", "Yuki Tanaka", "Nora Lindqvist",
]  # fmt: skip
COMPANIES = [
    "Brightside Plumbing", "Oak & Ivy Interiors", "Northwind Logistics", "Kettle Coffee Co",
    "Greenline Landscaping", "Harbor Dental", "Pixel Foundry", "Summit Physio",
    "Blue Fern Florists", "Atlas Tutoring", "Copperleaf Bakery", "Redwood Legal Services",
    "Lumen Studio", "Maple Street Vets", "Tidewater Marine", "Quartz Analytics Ltd",
]  # fmt: skip
PLANS = ["Starter", "Growth", "Enterprise"]
INTEGRATIONS = ["QuickBooks", "Xero", "Shopify", "Stripe"]
ENDPOINTS = ["/v2/invoices", "/v2/payments", "/v2/customers", "/v2/webhooks", "/v2/credit_notes"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "the iOS app", "the Android app"]


def weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def fill_values(rng: random.Random, when: datetime) -> dict[str, str]:
    """Values for the {placeholders} of the ticket texts."""
    plan, name = rng.choice(PLANS), rng.choice(NAMES)
    return {
        "name": name,
        "first": name.split()[0],
        "company": rng.choice(COMPANIES),
        "plan": plan,
        "other_plan": rng.choice([p for p in PLANS if p != plan]),
        "amount": f"{rng.choice([29, 49, 79, 99, 149, 240, 588, 1188])}.00",
        "invoice": f"INV-{rng.randint(1000, 9999)}",
        "client_invoice": f"#{rng.randint(100, 999)}",
        "date": (when - timedelta(days=rng.randint(1, 20))).strftime("%B %-d"),
        "seats": str(rng.randint(2, 12)),
        "card": str(rng.randint(1000, 9999)),
        "integration": rng.choice(INTEGRATIONS),
        "endpoint": rng.choice(ENDPOINTS),
        "req_id": f"req_{rng.getrandbits(48):012x}",
        "browser": rng.choice(BROWSERS),
        "n": str(rng.randint(3, 60)),
        "minutes": str(rng.randint(2, 15)),
        "vat": f"GB{rng.randint(100000000, 999999999)}",
        "email": f"accounts@{rng.choice(['acme', 'brightside', 'harbor', 'lumen'])}.example",
    }


def simple_prompt(rng: random.Random, label: str, values: dict[str, str]) -> str:
    text = rng.choice(SHORT[label]).format(**values)
    return f"{rng.choice(SIMPLE_INSTRUCTIONS)}\n\nTicket: {text}"


def ordinary_prompt(rng: random.Random, label: str, values: dict[str, str]) -> str:
    subject = rng.choice(SUBJECTS[label]).format(**values)
    body = rng.choice(ORDINARY[label]).format(**values)
    sign_off = f"\n\nThanks,\n{values['name']}\n{values['company']}"
    return f"{rng.choice(ORDINARY_INSTRUCTIONS)}\n\nSubject: {subject}\n\n{body}{sign_off}"


def thread_prompt(rng: random.Random, label: str, queue: str, values: dict[str, str]) -> str:
    """An email thread: an earlier request, an agent's reply, then the newest request."""
    earlier = rng.choice([t for t in QUEUE_TOPICS[queue] if t != label])
    first = rng.choice(ORDINARY[earlier]).format(**values)
    reply = rng.choice(AGENT_REPLIES).format(**values)
    last = rng.choice(ORDINARY[label]).format(**values)
    return (
        f"{rng.choice(THREAD_INSTRUCTIONS)}\n\n"
        f"--- Message 1, from {values['name']} ({values['company']}) ---\n{first}\n\n"
        f"--- Message 2, from Tallyworks Support ---\n{reply}\n\n"
        f"--- Message 3, from {values['name']} ---\n{last}"
    )


def log_prompt(rng: random.Random, label: str, values: dict[str, str]) -> str:
    """A long developer report: the customer's words, then a pasted log."""
    body = rng.choice(ORDINARY[label]).format(**values)
    tried = rng.choice(TRIED)
    log = "\n".join(line.format(**values) for line in LOGS)
    return f"{LOG_INSTRUCTION}\n\n{body}\n\n{tried}\n\nLog excerpt:\n{log}"


def ticket(rng: random.Random, number: int, when: datetime) -> dict:
    queue = weighted(rng, QUEUE_WEIGHTS)
    label = weighted(rng, QUEUE_TOPICS[queue])
    kind = weighted(rng, KIND_WEIGHTS)
    values = fill_values(rng, when)
    if kind == "simple":
        prompt = simple_prompt(rng, label, values)
    elif kind == "ordinary":
        prompt = ordinary_prompt(rng, label, values)
    elif queue == "technical" and label in LOG_LABELS:
        prompt = log_prompt(rng, label, values)
    else:
        prompt = thread_prompt(rng, label, queue, values)
    return {
        "id": f"TCK-{number}",
        "system_ref": queue,
        "prompt": prompt,
        "metadata": {
            "queue": queue,
            "priority": weighted(rng, PRIORITY_WEIGHTS),
            "customer_tier": weighted(rng, CUSTOMER_TIERS),
            "channel": weighted(rng, CHANNELS),
            "account_id": f"acct_{rng.randint(10000, 99999)}",
            "created_at": when.isoformat().replace("+00:00", "Z"),
        },
    }


def generate(n_items: int = DEFAULT_ITEMS, seed: int = DEFAULT_SEED) -> list[dict]:
    """`n_items` tickets, the same list for the same arguments."""
    rng = random.Random(seed)
    when = datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    tickets = []
    for i in range(n_items):
        when += timedelta(seconds=rng.randint(20, 400))  # tickets arrive through the evening
        tickets.append(ticket(rng, 100001 + i, when))
    return tickets


def write_jsonl(tickets: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for row in tickets:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="number of tickets")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT, help="JSONL path")
    args = parser.parse_args(argv)
    write_jsonl(generate(args.items, args.seed), args.output)
    print(f"wrote {args.items} tickets to {args.output}")


if __name__ == "__main__":
    main()
