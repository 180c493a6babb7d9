"""Metrics: counters every process adds to, and the collector a scrape reads."""
