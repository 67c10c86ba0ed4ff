"""Queries: request bodies checked against the policy, as canonical cube specifications."""

from __future__ import annotations

from .kinds import BUILDERS, SCORE_SCALE, build_query
from .spec import (
    MAX_CELLS,
    MAX_DIMENSIONS,
    Cube,
    Dimension,
    Measure,
    Misclassified,
    Query,
    QueryError,
    Where,
    parse_body,
)

__all__ = ["BUILDERS", "MAX_CELLS", "MAX_DIMENSIONS", "SCORE_SCALE", "Cube", "Dimension",
           "Measure", "Misclassified", "Query", "QueryError", "Where", "build_query", "parse_body"]
