"""Synthetic credit table with planted model problems and known ground truth.

The table imitates a loan book scored by a credit-risk model: personal data that serves as
canaries for leak tests (``customer_id``, ``name``, ``email``, ``ssn``, ``phone``), features
(``age``, ``income``, ``sex``, ``region``), a ``window`` split, the observed ``default`` label
and the model's ``score``. With ``problems=True`` four defects are planted whose exact
parameters and measured effect sizes are in :data:`GROUND_TRUTH`; with ``problems=False`` the
same seed gives the same people and reference rows without any defect, the control.

Determinism: ``n`` fixes the chunk layout (chunk ``c`` holds rows ``c * CHUNK_ROWS`` up to
``(c + 1) * CHUNK_ROWS``) and the window split (rows below ``n // 2`` are "reference", the
rest "current"). Chunk ``c`` draws only from ``SeedSequence(seed, spawn_key=(0, c))``, one
child stream per variable, so a table depends on nothing but ``(n, seed, problems)`` and
costs one chunk of memory to generate.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pdebug_jupyter.synth._identity import identity_columns
from pdebug_jupyter.synth._policy import DEFAULT_USERS, policy_budget, policy_toml, policy_users

__all__ = ["CHUNK_ROWS", "GROUND_TRUTH", "SCHEMA", "LoansFiles", "loans_frame", "make_loans"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CHUNK_ROWS = 1_000_000
"""Rows per generated chunk and per Parquet row group."""

MAX_ROWS = 10**8
CANARY_ROWS = 200
"""Rows sampled (deterministically from the seed) for ``canaries.txt``."""

SEXES = ("female", "male", "unknown")
SEX_P = (0.4985, 0.4985, 0.003)
REGIONS = ("north", "south", "east", "west", "central")
REGION_P = (0.25, 0.25, 0.245, 0.245, 0.01)
REGION_RISK = (0.0, 0.1, -0.05, -0.1, 0.0)

# Risk model: logit P(default) = INTERCEPT + AGE_RISK * (age - 40) / 10
#   + INCOME_RISK * ln(income / 50000) + REGION_RISK[region] + N(0, LATENT_SD).
# The latent term stands for what the model knows beyond these columns, so the male score
# equals the true probability exactly.
INTERCEPT = -1.8
AGE_RISK = -0.15
INCOME_RISK = -0.6
LATENT_SD = 1.3

# age = 18 + floor(72 * Beta(AGE_A, b)); mean 40.0 with AGE_B, 46.0 with AGE_B_CURRENT.
AGE_A = 2.0
AGE_B = AGE_A * 72 / (40 - 18) - AGE_A
AGE_B_CURRENT = AGE_A * 72 / (46 - 18) - AGE_A
INCOME_MEDIAN, INCOME_SIGMA = 50_000.0, 0.54
INCOME_DRIFT = 1.15
AGE_OUTLIER_SHARE = 0.002

CALIBRATION_SLOPE = 0.6
# Logit shift of female scores, tuned so the selection-rate gap at 0.5 is +0.05: measured
# P(score >= 0.5 | female) - P(score >= 0.5 | male) = 0.1316 - 0.0819 = 0.0497 on 10M rows.
FEMALE_SCORE_SHIFT = 0.62
FLIP_RATE = 0.30

DICTIONARY_COLUMNS = ["name", "age", "sex", "region", "window", "default"]
CANARY_COLUMNS = ["customer_id", "name", "email", "ssn", "phone"]

SCHEMA = pa.schema(
    [(column, pa.string()) for column in CANARY_COLUMNS]
    + [("age", pa.int64()), ("income", pa.float64())]
    + [(column, pa.string()) for column in ("sex", "region", "window")]
    + [("default", pa.int64()), ("score", pa.float64())]
)
"""Column names and Arrow types of the table, in order."""


def _frozen(value: object) -> object:
    """Read-only copy: mappings become mapping proxies and lists become tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


# Effect sizes measured with DuckDB on make_loans(10_000_000, seed=0) and on its control
# (problems=False); a 20k-50k row table lands within sampling noise of them.
GROUND_TRUTH = cast(
    Mapping[str, object],
    _frozen(
        {
            "label_model": {
                "true_logit": "intercept + age_per_decade * (age - 40) / 10"
                " + log_income * ln(income / 50000) + region_effect[region] + N(0, latent_sd)",
                "intercept": INTERCEPT,
                "age_per_decade": AGE_RISK,
                "log_income": INCOME_RISK,
                "region_effect": dict(zip(REGIONS, REGION_RISK, strict=True)),
                "latent_sd": LATENT_SD,
                "label": "default ~ Bernoulli(sigmoid(true_logit))",
                "score": "sigmoid(true_logit): calibrated, except where a problem is planted",
                "base_rate": {"problems": 0.196, "control": 0.203},
            },
            "miscalibration": {
                "group": {"sex": "female"},
                "female_score": "sigmoid(true_logit / slope + shift)",
                "true_probability": "sigmoid(slope * (logit(score) - shift))",
                "slope": CALIBRATION_SLOPE,
                "shift": FEMALE_SCORE_SHIFT,
                "meaning": "female scores are too extreme (overconfident) and too high",
                "ece_10_equal_bins": {"female": 0.056, "male": 0.003, "control": 0.0003},
                "note": "male ECE is not 0: the weak cohort's flipped labels include men",
            },
            "parity_gap": {
                "attribute": "sex",
                "threshold": 0.5,
                "difference": "P(score >= 0.5 | female) - P(score >= 0.5 | male)",
                "cause": "the female score shift of the miscalibration problem",
                "target": 0.05,
                "expected": 0.0497,
                "selection_rate": {"female": 0.1316, "male": 0.0819, "control": 0.0911},
            },
            "drift": {
                "reference": "rows [0, n // 2)",
                "current": "rows [n // 2, n)",
                "age": {
                    "formula": "18 + floor(72 * Beta(a, b)), before the out-of-bounds ages",
                    "a": AGE_A,
                    "b": {"reference": AGE_B, "current": AGE_B_CURRENT},
                    "mean": {"reference": 39.63, "current": 45.59},
                    "expected_mean_shift": 5.97,
                },
                "income": {"current_factor": INCOME_DRIFT, "expected_mean_ratio": 1.150},
                "not_drifting": ["sex", "region"],
            },
            "weak_cohort": {
                "filter": {"region": "east", "age_from": 18, "age_below": 25},
                "label_flip_rate": FLIP_RATE,
                "share_of_rows": {"problems": 0.018, "control": 0.023},
                "error_rate_at_0.5": {"cohort": 0.380, "rest": 0.172},
                "control_error_rate_at_0.5": {"cohort": 0.199, "rest": 0.177},
            },
            "out_of_domain": {
                "present_in_control": True,
                "sex": {"unknown": SEX_P[2]},
                "region": {"central": REGION_P[4]},
                "age_above_90": {"share": AGE_OUTLIER_SHARE, "values": [91, 105]},
                "income_above_200000": {"problems": 0.0078, "control": 0.0051},
            },
        }
    ),
)


@dataclass(frozen=True)
class LoansFiles:
    """Paths written by :func:`make_loans`.

    Attributes
    ----------
    data : Path
        The table (``<name>.parquet`` or ``<name>.csv``).
    policy : Path
        The policy TOML written next to it.
    canaries : Path
        Text file, one canary value per line.
    """

    data: Path
    policy: Path
    canaries: Path


def _sigmoid(x: FloatArray) -> FloatArray:
    # tanh form: no overflow warning for large |x|, unlike 1 / (1 + exp(-x))
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


_STREAMS = ("sex", "region", "age", "outlier", "income", "latent", "label", "flip", "identity")


def _chunk_rngs(seed: int, chunk: int) -> dict[str, np.random.Generator]:
    """One generator per variable of a chunk, from (seed, chunk) only.

    Separate streams keep planting a problem in one variable (which can change how many
    draws it consumes) from shifting the draws of every other variable.
    """
    children = np.random.SeedSequence(seed, spawn_key=(0, chunk)).spawn(len(_STREAMS))
    return {key: np.random.default_rng(c) for key, c in zip(_STREAMS, children, strict=True)}


def _features(
    rngs: Mapping[str, np.random.Generator], current: BoolArray, problems: bool
) -> dict[str, npt.NDArray[Any]]:
    """Draw sex, region, age and income; only current rows change with ``problems``."""
    m = current.size
    sex = rngs["sex"].choice(len(SEXES), size=m, p=SEX_P)
    region = rngs["region"].choice(len(REGIONS), size=m, p=REGION_P)
    drifted = current & problems
    # Beta is bounded, so ages stay in [18, 90) without a clipping spike at 90.
    b = np.where(drifted, AGE_B_CURRENT, AGE_B)
    age = 18 + np.floor(72 * rngs["age"].beta(AGE_A, b, m))
    # A few very old customers outside the policy bounds exercise clipping.
    outlier = rngs["outlier"].random(m) < AGE_OUTLIER_SHARE
    age = np.where(outlier, rngs["outlier"].integers(91, 106, m), age).astype(np.int64)
    income = INCOME_MEDIAN * np.exp(INCOME_SIGMA * rngs["income"].standard_normal(m))
    income *= np.where(drifted, INCOME_DRIFT, 1.0)
    return {"sex": sex, "region": region, "age": age, "income": np.round(income, 2)}


def _score_and_label(
    rngs: Mapping[str, np.random.Generator], f: Mapping[str, npt.NDArray[Any]], problems: bool
) -> tuple[FloatArray, IntArray]:
    """Score each row with the model and draw the observed default label."""
    m = f["age"].size
    eta = (
        INTERCEPT
        + AGE_RISK * (f["age"] - 40) / 10
        + INCOME_RISK * np.log(np.maximum(f["income"], 1.0) / INCOME_MEDIAN)
        + np.asarray(REGION_RISK)[f["region"]]
        + LATENT_SD * rngs["latent"].standard_normal(m)
    )
    label = (rngs["label"].random(m) < _sigmoid(eta)).astype(np.int64)
    if not problems:
        return _sigmoid(eta), label
    female = f["sex"] == SEXES.index("female")
    # Inverse of true = sigmoid(slope * (logit(score) - shift)).
    score = _sigmoid(np.where(female, eta / CALIBRATION_SLOPE + FEMALE_SCORE_SHIFT, eta))
    weak = (f["region"] == REGIONS.index("east")) & (f["age"] < 25)
    flip = weak & (rngs["flip"].random(m) < FLIP_RATE)
    return score, np.where(flip, 1 - label, label)


def _chunk(n: int, seed: int, chunk: int, problems: bool) -> pa.Table:
    """Rows ``[chunk * CHUNK_ROWS, ...)`` of the (n, seed, problems) table."""
    rows = np.arange(chunk * CHUNK_ROWS, min(n, (chunk + 1) * CHUNK_ROWS), dtype=np.int64)
    rngs = _chunk_rngs(seed, chunk)
    current = rows >= n // 2
    f = _features(rngs, current, problems)
    score, label = _score_and_label(rngs, f, problems)
    male = f["sex"] == SEXES.index("male")
    female = f["sex"] == SEXES.index("female")
    columns = identity_columns(rngs["identity"], rows, male, female, seed)
    columns.update(
        age=pa.array(f["age"]),
        income=pa.array(f["income"]),
        sex=pa.array(SEXES).take(f["sex"]),
        region=pa.array(REGIONS).take(f["region"]),
        window=pc.if_else(pa.array(current), "current", "reference"),
        default=pa.array(label),
        score=pa.array(score),
    )
    return pa.table([columns[field.name] for field in SCHEMA], schema=SCHEMA)


def _chunks(n: int, seed: int, problems: bool) -> Iterator[pa.Table]:
    for chunk in range(-(-n // CHUNK_ROWS)):
        yield _chunk(n, seed, chunk, problems)


def loans_frame(n: int, seed: int, *, problems: bool = True) -> pd.DataFrame:
    """Return the synthetic loans table in memory.

    Parameters
    ----------
    n : int
        Number of rows (customers); also fixes the chunk layout and the window split.
    seed : int
        Seed; the same ``(n, seed, problems)`` always gives the same table.
    problems : bool
        Plant the problems described in :data:`GROUND_TRUTH`; ``False`` gives the control.

    Returns
    -------
    pandas.DataFrame
        Columns as in :data:`SCHEMA`, string columns with pandas' string dtype.
    """
    _check_size(n, seed)
    table = pa.concat_tables(_chunks(n, seed, problems))
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _check_size(n: int, seed: int) -> None:
    # Above 10**8 rows customer ids would outgrow 8 digits and SSNs would repeat.
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_ROWS:
        raise ValueError(f"n must be an integer from 1 to {MAX_ROWS}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError("seed must be a non-negative integer")


def make_loans(
    n: int = 50_000,
    seed: int = 0,
    path: str | os.PathLike[str] = ".",
    *,
    name: str = "loans",
    fmt: str = "parquet",
    problems: bool = True,
    epsilon_per_user: float = 5.0,
    epsilon_total: float = 20.0,
    min_cohort: int = 25,
    max_rows_per_unit: int = 1,
    users: Sequence[Mapping[str, str]] | None = None,
) -> LoansFiles:
    """Write the synthetic loans table, its policy and its canaries into a directory.

    Parameters
    ----------
    n, seed, problems
        As in :func:`loans_frame`; the table written equals
        ``loans_frame(n, seed, problems=problems)``.
    path : str or os.PathLike
        Directory, created if missing.
    name : str
        Dataset name: the table is ``<path>/<name>.<fmt>`` and the policy section
        ``[datasets.<name>]``. Letters, digits, ``_`` and ``-`` only.
    fmt : {"parquet", "csv"}
        Table format. Parquet is written with one row group per chunk of ``CHUNK_ROWS``.
    epsilon_per_user, epsilon_total, min_cohort, max_rows_per_unit
        Written into the policy as they are.
    users : sequence of mappings, optional
        Each with exactly ``name``, ``role`` and ``token``; replaces the default users
        alice (analyst), olivia (owner), victor (viewer) and audrey (auditor).

    Returns
    -------
    LoansFiles
        Paths of the table, ``policy.toml`` and ``canaries.txt``.

    Notes
    -----
    Memory stays around one chunk (a few hundred MB) whatever ``n`` is.
    """
    _check_size(n, seed)
    if fmt not in ("parquet", "csv"):
        raise ValueError('fmt must be "parquet" or "csv"')
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError("name may hold only letters, digits, '_' and '-'")
    budget = policy_budget(epsilon_per_user, epsilon_total, min_cohort, max_rows_per_unit)
    user_rows = policy_users(DEFAULT_USERS if users is None else users)
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    files = LoansFiles(
        data=directory / f"{name}.{fmt}",
        policy=directory / "policy.toml",
        canaries=directory / "canaries.txt",
    )
    canaries = _write_table(files.data, n, seed, problems)
    files.canaries.write_text("".join(f"{value}\n" for value in canaries), encoding="utf-8")
    origin = f"make_loans(n={n}, seed={seed}, problems={problems})"
    toml = policy_toml(name, files.data.name, origin, budget, user_rows)
    files.policy.write_text(toml, encoding="utf-8")
    return files


def _write_table(target: Path, n: int, seed: int, problems: bool) -> list[str]:
    """Write the table chunk by chunk; return the canary values found on the way."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2,)))
    sample = np.sort(rng.choice(n, size=min(CANARY_ROWS, n), replace=False))
    # Write to a temporary name first, so an interrupted run leaves no half table behind.
    partial = target.with_name(target.name + ".partial")
    writer: Any
    if target.suffix == ".csv":
        options = pacsv.WriteOptions(quoting_style="needed")
        writer = pacsv.CSVWriter(partial, SCHEMA, write_options=options)
        write = writer.write_table
    else:
        # Dictionaries only where values repeat: trying them on unique identifiers is wasted.
        writer = pq.ParquetWriter(partial, SCHEMA, use_dictionary=DICTIONARY_COLUMNS)
        write = functools.partial(writer.write_table, row_group_size=CHUNK_ROWS)
    picked: list[pa.Table] = []
    try:
        # Numpy and Arrow release the GIL, so writing chunk k in a thread overlaps generating
        # chunk k + 1; waiting before each submit keeps at most three chunks in memory and
        # the chunks in order.
        with writer, ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(lambda: None)
            for chunk, table in enumerate(_chunks(n, seed, problems)):
                pending.result()
                pending = pool.submit(write, table)
                start = chunk * CHUNK_ROWS
                local = sample[(sample >= start) & (sample < start + table.num_rows)] - start
                picked.append(table.select(CANARY_COLUMNS).take(pa.array(local)))
            pending.result()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    rows = pa.concat_tables(picked).to_pylist()
    # dict.fromkeys keeps the first occurrence: distinct values in a stable order.
    return list(dict.fromkeys(str(row[col]) for row in rows for col in CANARY_COLUMNS))

