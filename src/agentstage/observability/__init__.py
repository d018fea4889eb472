"""Observation of runs: masking here; tracing, metrics and logs hang off the event stream."""
