"""OTLP: decode and encode OTLP/HTTP payloads; normalize instrumentation dialects to ``LlmCall``."""
