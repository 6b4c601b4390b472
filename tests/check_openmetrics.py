#!/usr/bin/env python3
"""Parses an OpenMetrics exposition from stdin with the strict parser of Prometheus's Python
client; exits non-zero (printing the error) if it is not valid. Prints the number of families
and samples otherwise. Used by the integration tests."""
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    families = list(text_string_to_metric_families(text))
except Exception as e:  # the parser raises ValueError and friends
    print(f"invalid OpenMetrics: {e}", file=sys.stderr)
    sys.exit(1)
samples = sum(len(f.samples) for f in families)
print(f"{len(families)} families, {samples} samples")
