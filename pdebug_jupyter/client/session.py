"""Sessions and datasets: ``connect()`` and the typed query methods."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from .local import LocalService
from .release import Release
from .transport import PdebugError, Transport


class Session:
    """A connection to the privacy service on behalf of one user and one purpose."""

    def __init__(self, transport: Transport, local: LocalService | None = None) -> None:
        self._transport = transport
        self._local = local
        self.url = transport.url
        # what this session asked (never what came back): the source of ``recipe()``
        self._log: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        return self._transport.request(method, path, body, params)

    @property
    def me(self) -> dict[str, Any]:
        return dict(self.request("GET", "/me"))

    def datasets(self) -> list[str]:
        return [d["name"] for d in self.request("GET", "/datasets")["datasets"]]

    def dataset(self, name: str) -> Dataset:
        return Dataset(self, name)

    def budget(self) -> dict[str, Any]:
        return dict(self.request("GET", "/budget")["datasets"])

    @property
    def purpose(self) -> str | None:
        """Why this session looks at the data: sent with every request, recorded with every
        release and audit row. Setting it applies from the next request on."""
        return self._transport.purpose

    @purpose.setter
    def purpose(self, text: str | None) -> None:
        text = " ".join((text or "").split())  # one line: a header cannot hold a newline
        if text and (len(text) > MAX_PURPOSE or not text.isprintable() or not text.isascii()):
            raise PdebugError("invalid_purpose", f"a purpose is printable ASCII text of at most "
                              f"{MAX_PURPOSE} characters")
        self._transport.purpose = text or None

    def grant(self, user: str, dataset: str, *, purpose: str, epsilon: float | None = None,
              role: str | None = None, ttl: float | None = None,
              expires_at: str | None = None) -> dict[str, Any]:
        """Owners only: give ``user`` extra ``epsilon`` and/or ``role`` on ``dataset`` for
        ``ttl`` seconds (or until ``expires_at``, ISO 8601); it lapses by itself."""
        body = _drop_none({"user": user, "dataset": dataset, "purpose": purpose,
                           "epsilon": epsilon, "role": role, "ttl": ttl,
                           "expires_at": expires_at})
        return dict(self.request("POST", "/grants", body)["grant"])

    def grants(self, *, active: bool = False) -> list[dict[str, Any]]:
        """Grants (all of them for owners and auditors, one's own for others)."""
        params = {"active": "1"} if active else None
        return list(self.request("GET", "/grants", params=params)["grants"])

    def revoke_grant(self, grant_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"/grants/{grant_id}")["grant"])

    def releases(self, dataset: str | None = None) -> list[dict[str, Any]]:
        params = {"dataset": dataset} if dataset else None
        return list(self.request("GET", "/releases", params=params)["releases"])

    def release(self, release_id: str) -> Release:
        """A release made earlier (by anyone), read from the service at no cost."""
        return Release.of(self.request("GET", f"/releases/{release_id}"))

    def recipe(self, *, purpose: str | None = None, since: str | None = None
               ) -> dict[str, Any]:
        """The queries this session released, as a replayable recipe (JSON-ready).

        It holds each query's dataset, kind, parameters and epsilon, and the id of the release
        it got (so a replay can show the old result beside the new one, read for free); never
        a released value. ``purpose`` keeps the queries asked under that purpose, ``since``
        (ISO 8601 with a zone) those asked at or after it. A repeated query appears once.
        """
        after = datetime.fromisoformat(since) if since is not None else None
        seen, queries = set(), []
        for q in self._log:
            key = json.dumps([q["dataset"], q["kind"], q["epsilon"], q["params"]],
                             sort_keys=True)
            if ((purpose is not None and q["purpose"] != purpose) or key in seen
                    or (after is not None and datetime.fromisoformat(q["asked_at"]) < after)):
                continue
            seen.add(key)
            queries.append(dict(q))
        return {"format": RECIPE_FORMAT, "version": 1, "service": self.url,
                "queries": queries}

    def export_recipe(self, path: str | os.PathLike[str], **filters: Any) -> dict[str, Any]:
        """Write :meth:`recipe` to ``path`` as JSON; replay it with ``pdj.replay``."""
        recipe = self.recipe(**filters)
        with open(path, "w") as f:
            json.dump(recipe, f, indent=1)
        return recipe

    def close(self) -> None:
        global _current
        if _current is self:
            _current = None
        self._transport.close()
        if self._local is not None:
            self._local.stop()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "local service" if self._local else "service"
        return f"<Session {kind} {self.url}>"


class Dataset:
    """One dataset on the service. Methods that take ``epsilon`` spend budget, once."""

    def __init__(self, session: Session, name: str) -> None:
        self.session, self.name = session, name
        self._schema: dict[str, Any] | None = None

    @property
    def schema(self) -> dict[str, Any]:
        """Public metadata: column kinds, domains and bounds from the policy."""
        if self._schema is None:
            self._schema = dict(self.session.request("GET", f"/datasets/{self.name}"))
        return {k: v for k, v in self._schema.items() if k != "budget"}

    @property
    def budget(self) -> dict[str, Any]:
        return dict(self.session.request("GET", f"/datasets/{self.name}")["budget"])

    def query(self, kind: str, *, epsilon: float, **params: Any) -> Release:
        body = {"kind": kind, "epsilon": epsilon, **_drop_none(params)}
        release = Release.of(self.session.request("POST", f"/datasets/{self.name}/query", body))
        prov = release.provenance
        self.session._log.append({
            "dataset": self.name, "kind": kind, "epsilon": epsilon,
            "params": {k: v for k, v in body.items() if k not in ("kind", "epsilon")},
            "purpose": self.session.purpose, "release_id": release.release_id,
            "asked_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            "created_at": prov.get("created_at"), "fingerprint": prov.get("fingerprint"),
            "model_version": prov.get("model_version")})
        return release

    def cost(self, kind: str, *, epsilon: float, **params: Any) -> dict[str, Any]:
        """What the query would cost now (zero if cached) and its expected noise; free."""
        body = {"kind": kind, "epsilon": epsilon, **_drop_none(params)}
        return dict(self.session.request("POST", f"/datasets/{self.name}/cost", body))

    def histogram(self, column: str, *, by: str | list[str] | None = None,
                  where: dict[str, Any] | None = None, bins: int | None = None,
                  epsilon: float) -> Release:
        """Noisy counts of ``column`` (over its policy bins or categories) by groups."""
        return self.query("histogram", epsilon=epsilon, column=column, by=by, where=where,
                          bins=bins)

    def calibration(self, score: str | None = None, label: str | None = None, *,
                    by: str | list[str] | None = None, bins: int | None = None,
                    where: dict[str, Any] | None = None, epsilon: float) -> Release:
        """Reliability diagram, ECE, MCE and Brier score, per group. ``score`` and ``label``
        default to the policy's only score and label columns."""
        return self.query("calibration", epsilon=epsilon, score=score, label=label, by=by,
                          bins=bins, where=where)

    def confusion(self, score: str | None = None, label: str | None = None, *,
                  by: str | list[str] | None = None, bins: int | None = None,
                  where: dict[str, Any] | None = None, epsilon: float) -> Release:
        """A (score bin x label x group) cube: confusion matrices and fairness gaps at every
        threshold on a bin edge, ROC and PR curves, all from one release."""
        return self.query("confusion", epsilon=epsilon, score=score, label=label, by=by,
                          bins=bins, where=where)

    def drift(self, columns: list[str] | None = None, *,
              reference: dict[str, Any] | None = None, current: dict[str, Any] | None = None,
              bins: int | None = None, where: dict[str, Any] | None = None,
              epsilon: float) -> Release:
        """Per-column drift between two disjoint samples. Without ``reference`` and
        ``current``, the policy's only split column's first and second categories."""
        if reference is None and current is None:
            reference, current = self._default_windows()
        return self.query("drift", epsilon=epsilon, columns=columns, reference=reference,
                          current=current, bins=bins, where=where)

    def cohort_errors(self, features: list[str], *, score: str | None = None,
                      label: str | None = None, threshold: float | None = None,
                      prediction: str | None = None, where: dict[str, Any] | None = None,
                      epsilon: float) -> Release:
        """Error counts over combinations of 1-3 declared features. The prediction is
        ``score >= threshold`` (0.5 by default) or a binary ``prediction`` column."""
        return self.query("cohort_errors", epsilon=epsilon, features=features, score=score,
                          label=label, threshold=threshold, prediction=prediction,
                          where=where)

    def attribution(self, columns: list[str] | None = None, *,
                    by: str | list[str] | None = None, where: dict[str, Any] | None = None,
                    epsilon: float) -> Release:
        """Global importance: mean absolute per-row attribution of each declared column."""
        return self.query("attribution", epsilon=epsilon, columns=columns, by=by, where=where)

    def performance_estimate(self, score: str | None = None, *, bins: int | None = None,
                             where: dict[str, Any] | None = None, epsilon: float) -> Release:
        """Expected accuracy, precision and recall of unlabelled data from its score
        histogram, assuming the model is calibrated (CBPE)."""
        return self.query("performance_estimate", epsilon=epsilon, score=score, bins=bins,
                          where=where)

    def marginals(self, columns: list[str] | None = None, *,
                  where: dict[str, Any] | None = None, epsilon: float) -> Release:
        """Noisy counts of every column and of every pair of columns (default: all but
        identifiers), epsilon split equally; what :meth:`synthetic` samples from."""
        return self.query("marginals", epsilon=epsilon, columns=columns, where=where)

    def synthetic(self, n: int, epsilon: float, *, columns: list[str] | None = None,
                  seed: int | None = None, where: dict[str, Any] | None = None) -> Any:
        """A differentially private synthetic twin: ``n`` rows sampled along a maximum
        spanning tree of released one- and two-way marginals (a ``SyntheticFrame``, marked
        synthetic wherever shown). The release is charged once; resampling is free."""
        from ..metrics.synthetic import MarginalsRelease, check_rows  # metrics sit above

        check_rows(n)  # before the query: a bad n spends nothing
        release = self.marginals(columns, where=where, epsilon=epsilon)
        assert isinstance(release, MarginalsRelease)
        return release.twin(n, seed=seed)

    def health_check(self, epsilon: float = 1.0, **options: Any) -> Any:
        """Calibration, fairness, drift and error cohorts in one budget; findings ranked by
        severity (see :func:`pdebug_jupyter.health.health_check`)."""
        from ..health import health_check  # the metrics layer sits above the client

        return health_check(self, epsilon, **options)

    def _default_windows(self) -> tuple[dict[str, Any], dict[str, Any]]:
        splits = [c for c in self.schema["columns"] if c["kind"] == "split"]
        if len(splits) != 1 or len(splits[0]["categories"]) < 2:
            raise PdebugError("invalid_parameter", "give reference= and current= filters: the "
                              "policy does not declare exactly one split column")
        name, cats = splits[0]["name"], splits[0]["categories"]
        return {name: cats[0]}, {name: cats[1]}

    def __repr__(self) -> str:
        return f"<Dataset {self.name!r} at {self.session.url}>"


def _drop_none(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


MAX_PURPOSE = 500  # the service keeps this many characters of a purpose
RECIPE_FORMAT = "pdebug-jupyter recipe"

_current: Session | None = None


def current_session() -> Session | None:
    """The open session the last :func:`connect` made; the ``%pdebug`` magics use it."""
    return _current


def connect(url: str | None = None, *, token: str | None = None,
            policy: str | os.PathLike[str] | None = None, purpose: str | None = None) -> Session:
    """Connect to a privacy service.

    With ``url`` and ``token`` (or ``PDEBUG_URL`` and ``PDEBUG_TOKEN`` in the environment)
    it connects to a running service. Inside a JupyterHub single-user server the token
    defaults to the server's ``JUPYTERHUB_API_TOKEN`` (the hub user's own, with the scopes its
    roles grant) and the admin sets ``PDEBUG_URL`` in ``c.Spawner.environment``, so
    ``connect()`` needs no arguments there. With a ``policy`` file (or ``PDEBUG_POLICY``) and no
    url it starts a local service child process on a free loopback port with a fresh random
    token, stopped when the session closes. ``purpose`` is recorded with every release and
    audit row.
    """
    url = url or os.environ.get("PDEBUG_URL")
    if url:
        token = (token or os.environ.get("PDEBUG_TOKEN")
                 or os.environ.get("JUPYTERHUB_API_TOKEN"))
        if not token:
            raise PdebugError("no_token", "a token is needed: pass token=, set PDEBUG_TOKEN, "
                              "or run in a JupyterHub server ($JUPYTERHUB_API_TOKEN)")
        session = Session(Transport(url, token, purpose))
    else:
        policy = policy or os.environ.get("PDEBUG_POLICY")
        if not policy:
            raise PdebugError("no_service", "nothing to connect to: pass url= and token=, set "
                              "PDEBUG_URL and PDEBUG_TOKEN, or pass policy= for a local service")
        local = LocalService(policy)
        session = Session(Transport(local.url, local.token, purpose), local)
    session.request("GET", "/me")  # fail now, with a clear error, if the token is wrong
    global _current
    _current = session
    if "IPython" in sys.modules:  # maybe inside IPython; never import it from here
        from ..guard import enable_for_session  # the guard sits above the client

        enable_for_session(session)
    return session
