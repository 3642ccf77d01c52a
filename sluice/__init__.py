"""Sluice: a self-hosted, Segment-compatible analytics event collector on Ray."""

__version__ = "0.1.0"
