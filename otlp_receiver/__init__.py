"""Traceward package."""
