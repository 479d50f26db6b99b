"""Money: exact amounts (picodollars), prices from genai-prices or the spec's
negotiated rates, and the attempt costs reconcile stores.
"""
