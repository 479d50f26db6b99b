"""Generate jobs/extract-input.jsonl: invoice e-mails for the JSON-Schema extraction job.

Deterministic: the same seed and count give the same bytes, so the committed file can be
checked against a fresh run (tests/test_extract_job.py does). Each line is in item form:

    {"id": "INV-000001", "prompt": "...", "metadata": {"vendor": ..., "total": ...}}

The metadata keeps the figures the e-mail was written from, so answers can be checked.

Usage:
    .venv/bin/python scripts/make_extract_input.py                  # 200 e-mails, the default
    .venv/bin/python scripts/make_extract_input.py --items 5000 -o /tmp/invoices.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "jobs" / "extract-input.jsonl"
DEFAULT_ITEMS = 200
DEFAULT_SEED = 20261203

VENDORS = [
    "Northwind Paper Co.", "Bluefin Logistics", "Kestrel Cloud Hosting", "Harbor & Pine Legal",
    "Oakline Office Supply", "Copperleaf Catering", "Vantage Print Works", "Meridian Telecom",
    "Juniper Facilities", "Stonebridge Consulting", "Brightwave Media", "Tallow Lane Bakery",
]  # fmt: skip
ITEMS = [
    "A4 paper, 20 reams", "Toner cartridges", "Freight, pallet of 12", "Monthly hosting plan",
    "Extra storage, 500 GB", "Contract review, 3 h", "Office chairs", "Lunch for 14 people",
    "Brochures, 2,000 copies", "Fibre line rental", "Cleaning, weekly", "Strategy workshop",
    "Video editing, 6 h", "Pastry platter", "Desk lamps", "Courier, same day",
]  # fmt: skip
CURRENCIES = {"USD": "$", "EUR": "€", "GBP": "£"}
OPENINGS = [
    "Hello,\n\nPlease find our invoice below.",
    "Hi team,\n\nHere is the invoice for last month's work.",
    "Dear customer,\n\nThank you for your order. Your invoice follows.",
    "Good morning,\n\nAs agreed, we are sending the invoice for the items below.",
]
CLOSINGS = [
    "Kind regards,\nAccounts receivable",
    "Thanks,\nThe billing team",
    "Best wishes,\nFinance",
]


def invoice(rng: random.Random, number: int) -> dict:
    """One invoice e-mail and the figures it was written from."""
    vendor = rng.choice(VENDORS)
    currency = rng.choice(list(CURRENCIES))
    symbol = CURRENCIES[currency]
    issued = date(2026, 1, 1) + timedelta(days=rng.randrange(330))
    picked = rng.sample(ITEMS, rng.randint(1, 4))
    lines = [(item, round(rng.uniform(12, 900), 2)) for item in picked]
    total = round(sum(amount for _, amount in lines), 2)
    paid = rng.random() < 0.3
    invoice_no = f"{vendor[:3].upper()}-{issued.year}-{rng.randrange(1000, 99999)}"
    body = "\n".join(f"- {item}: {symbol}{amount:,.2f}" for item, amount in lines)
    status = (
        "This invoice has already been paid by card; no action is needed."
        if paid
        else (f"Payment is due within {rng.choice([14, 30, 45])} days.")
    )
    prompt = (
        f"From: billing@{vendor.split()[0].lower()}.example\n"
        f"Subject: Invoice {invoice_no}\n\n"
        f"{rng.choice(OPENINGS)}\n\n"
        f"Invoice number: {invoice_no}\nDate: {issued:%d %B %Y}\n\n{body}\n\n"
        f"Total ({currency}): {symbol}{total:,.2f}\n{status}\n\n{rng.choice(CLOSINGS)}\n"
        f"{vendor}"
    )
    return {
        "id": f"INV-{number:06d}",
        "prompt": prompt,
        "metadata": {"vendor": vendor, "invoice_number": invoice_no, "total": total,
                     "currency": currency, "paid": paid},
    }  # fmt: skip


def generate(items: int = DEFAULT_ITEMS, seed: int = DEFAULT_SEED) -> bytes:
    """The input file's bytes for `items` e-mails from `seed`."""
    rng = random.Random(seed)
    rows = (invoice(rng, n) for n in range(1, items + 1))
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    args.output.write_bytes(generate(args.items, args.seed))
    print(f"wrote {args.items} e-mails to {args.output}")


if __name__ == "__main__":
    main()
