"""Reporting: cost and quality figures summed from the database, rendered as
text, JSON, CSV, Markdown or HTML, and the per-item exports.
"""
