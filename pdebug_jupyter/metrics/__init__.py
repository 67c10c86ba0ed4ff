"""Metrics: pure post-processing of released cubes, free of privacy cost.

Each family works on a small frozen dataclass of released arrays (NaN marks a suppressed
cell) and the known distribution of the DP noise, and returns values with intervals that
account for both that noise and sampling (parametric bootstrap, see ``_bootstrap``).
"""
