"""Figures the chapters draw, one file per topic, so that a chapter calls one function instead of holding
plotting code. Each function returns the matplotlib Figure it drew (the tests check its axes and lines)."""
