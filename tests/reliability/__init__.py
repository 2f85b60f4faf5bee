"""Reliability proof: stateful model, fault injection and bad-input sweep (docs/reliability.md)."""
