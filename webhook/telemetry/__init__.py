"""Logs, metrics and memory: how every process says what it does."""
