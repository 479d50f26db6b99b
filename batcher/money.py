"""Exact money: Decimal dollars at the edges, whole picodollars (1e-12 USD) in the database."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

PICO_PER_USD = Decimal(10) ** 12


def to_pusd(usd: Decimal | int | str) -> int:
    """Dollars -> picodollars, rounding half-even (exact for any price per million tokens
    with up to six decimals)."""
    return int((Decimal(usd) * PICO_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def to_usd(pusd: int) -> Decimal:
    """Picodollars -> exact Decimal dollars."""
    return Decimal(pusd) / PICO_PER_USD


def fmt_usd(usd: Decimal | int, places: int = 4) -> str:
    """'$1,234.5678' for people; pass picodollars through to_usd first."""
    return f"${Decimal(usd):,.{places}f}"
