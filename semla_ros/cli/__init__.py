"""Command-line entry points, kept thin: each parses its options and calls the package code."""
