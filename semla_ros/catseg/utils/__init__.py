"""Helpers around the CAT-Seg network (export)."""
