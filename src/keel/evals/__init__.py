"""Evaluators: the registry, built-ins, judges, runner and gates."""
