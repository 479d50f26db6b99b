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


def fmt_money(usd: Decimal | int) -> str:
    """Money for tables: cents from a dollar up, else four significant digits ('$0.00003992');
    JSON and CSV keep the exact value."""
    usd = Decimal(usd)
    if usd == 0:
        return "$0"
    if abs(usd) >= 1:
        return f"${usd:,.2f}"
    return f"${usd:.4g}"
