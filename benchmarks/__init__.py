"""Benchmarks of aiologsinks against the stdlib and peers (``python -m benchmarks``).

Not part of the package and never run by pytest; see ``benchmarks/README.md``.
"""
