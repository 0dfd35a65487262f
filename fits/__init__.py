"""Scaling-law fits of vote curves, comparisons, reports and plots."""
