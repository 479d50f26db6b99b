"""Planning: input lines parsed and stored, routed to a tier, turned into requests,
laid out into batch files, and priced before a cent is spent.
"""
