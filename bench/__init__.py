"""Storefront benchmarks: `python -m bench` (or `make bench`), `python -m bench --quick` in CI.

Each scenario is measured next to its ceiling in the same run on the same machine, so the
figures that matter are ratios. See docs/performance.md for the method and the latest table.
"""
