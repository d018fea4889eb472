"""Persistence of runs, events and conversations."""
