"""Keel guardrails."""
