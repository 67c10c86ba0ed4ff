"""Each query kind's cube, as an analyst holding the rows would compute it: SQL and pandas.

Shared by ``bench_kinds.py`` and the peer workers (``peer_workers.py``). This module imports
only the standard library at the top: a worker that times DuckDB alone must not carry pandas
in its peak memory, so the pandas cubes import numpy and pandas when first called.

The bins are the synthetic loans policy's (``make_loans``): age at 25, 35, 45, 55, 65;
income 10 equal-width bins over [0, 200000]; score 10 equal-width bins over [0, 1] (20 for
``performance_estimate``); the window split is "reference" / "current".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

KINDS = ("histogram", "calibration", "confusion", "drift", "cohort_errors",
         "performance_estimate")
DRIFT_COLUMNS = ["age", "income", "region", "sex"]
PANDAS_COLUMNS = ["age", "income", "sex", "region", "window", "default", "score"]
AGE_BREAKS = [25, 35, 45, 55, 65]
INCOME_WIDTH = 20_000
SEXES = ["female", "male"]  # the policy's categories; "unknown" falls into "other"
REGIONS = ["north", "south", "east", "west"]  # "central" falls into "other"
WINDOWS = ["reference", "current"]
# the service's epsilon split (privacy.plan_noise): a query's epsilon over its measures
MEASURES = {"histogram": 1, "calibration": 5, "confusion": 1, "drift": 4, "cohort_errors": 2,
            "performance_estimate": 2}

# --- hand-written SQL ------------------------------------------------------------------------
AGE = ("CASE WHEN age < 25 THEN 0 WHEN age < 35 THEN 1 WHEN age < 45 THEN 2 WHEN age < 55 "
       "THEN 3 WHEN age < 65 THEN 4 WHEN age IS NOT NULL THEN 5 ELSE -1 END")
INCOME = "least(greatest(floor(income / 20000), 0), 9)"  # policy: 10 bins over [0, 200000]
SCORE10 = "least(floor(score * 10), 9)"  # the policy's 10 score bins over [0, 1]
SCORE20 = "least(floor(score * 20), 19)"  # performance_estimate's default 20 bins
IN_WINDOWS = "\"window\" IN ('reference', 'current')"
RAW_SQL = {
    # bench_core.py's query, unchanged
    "histogram": f"""
SELECT {AGE} AS a,
       CASE WHEN sex = 'female' THEN 0 WHEN sex = 'male' THEN 1 ELSE -1 END AS s,
       count(*) AS n
FROM {{src}} GROUP BY ALL""",
    "calibration": f"""
SELECT {SCORE10} AS b, sex, count(*) AS n, sum("default") AS pos, sum(score) AS s,
       sum(score * "default") AS sp, sum(score * score) AS ss
FROM {{src}} GROUP BY ALL""",
    "confusion": f"""
SELECT {SCORE10} AS b, "default", sex, count(*) AS n FROM {{src}} GROUP BY ALL""",
    # one grouped count per column, over the rows of either window (cells cast to text after
    # the aggregate, so the four can be stacked)
    "drift": "\nUNION ALL\n".join(
        f"SELECT {i} AS part, w, v::VARCHAR AS v, n FROM (SELECT \"window\" AS w, {expr} AS v, "
        f"count(*) AS n FROM {{src}} WHERE {IN_WINDOWS} GROUP BY ALL)"
        for i, expr in enumerate((AGE, INCOME, "region", "sex"))),
    "cohort_errors": f"""
SELECT region, {AGE} AS a, count(*) AS n,
       sum(((score >= 0.5) <> ("default" = 1))::INTEGER) AS errors
FROM {{src}} GROUP BY ALL""",
    "performance_estimate": f"""
SELECT {SCORE20} AS b, count(*) AS n, sum(score) AS s
FROM {{src}} WHERE "window" = 'current' GROUP BY ALL""",
}


# --- pandas: the same cube from a DataFrame ------------------------------------------------
def _age(df: pd.DataFrame) -> Any:
    import numpy as np
    import pandas as pd

    return pd.cut(df["age"], [-np.inf, *AGE_BREAKS, np.inf], right=False, labels=False)


def _score_bin(df: pd.DataFrame, bins: int) -> Any:
    import numpy as np

    return np.minimum(np.floor(df["score"].to_numpy() * bins), bins - 1)


def pandas_histogram(df: pd.DataFrame) -> object:
    return df.groupby([_age(df), df["sex"]]).size()


def pandas_calibration(df: pd.DataFrame) -> object:
    import pandas as pd

    s, y = df["score"], df["default"]
    frame = pd.DataFrame({"b": _score_bin(df, 10), "sex": df["sex"], "y": y, "s": s,
                          "sp": s * y, "ss": s * s})
    return frame.groupby(["b", "sex"]).agg(n=("y", "size"), pos=("y", "sum"), s=("s", "sum"),
                                           sp=("sp", "sum"), ss=("ss", "sum"))


def pandas_confusion(df: pd.DataFrame) -> object:
    return df.groupby([_score_bin(df, 10), df["default"], df["sex"]]).size()


def pandas_drift(df: pd.DataFrame) -> object:
    import numpy as np

    both = df[df["window"].isin(WINDOWS)]
    income = np.clip(np.floor(both["income"].to_numpy() / INCOME_WIDTH), 0, 9)
    return [both.groupby([both["window"], key]).size()
            for key in (_age(both), income, both["region"], both["sex"])]


def pandas_cohort_errors(df: pd.DataFrame) -> object:
    errors = (df["score"] >= 0.5) != (df["default"] == 1)
    return errors.groupby([df["region"], _age(df)]).agg(["size", "sum"])


def pandas_performance_estimate(df: pd.DataFrame) -> object:
    current = df[df["window"] == "current"]
    return current["score"].groupby(_score_bin(current, 20)).agg(["size", "sum"])


PANDAS = {"histogram": pandas_histogram, "calibration": pandas_calibration,
          "confusion": pandas_confusion, "drift": pandas_drift,
          "cohort_errors": pandas_cohort_errors,
          "performance_estimate": pandas_performance_estimate}
