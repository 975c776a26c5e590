"""Slow reference implementations written straight from the papers, for tests and benchmarks:
:mod:`tests.reference.getam` (GETAM's per-image, per-class loop) and :mod:`tests.reference.pamr`
(PAMR by dilated convolutions re-gathered at every iteration). Not part of the wsss package.

Benchmarks run from the repository root (``python benchmarks/x.py``) put the root on
``sys.path`` before importing them.
"""
