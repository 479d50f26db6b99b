"""Scheduling: recurring runs kept in the state database, the daemon that fires
them, and what one firing does.
"""
