"""Experiments: runnable studies (`python -m minids.experiments.NAME`) whose results the chapters plot."""
