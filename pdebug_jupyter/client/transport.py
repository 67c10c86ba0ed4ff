"""HTTP to the service: one typed request helper, errors as one-line exceptions."""

from __future__ import annotations

from typing import Any

import requests


class PdebugError(Exception):
    """A refusal or failure from the service, with its stable ``code``."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{message} [{code}]")
        self.code, self.message, self.status = code, message, status


PURPOSE_HEADER = "X-Pdebug-Purpose"


class Transport:
    def __init__(self, url: str, token: str, purpose: str | None, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"token {token}"
        # requests re-reads the environment (proxies, CA bundle, .netrc) on every call: 1-5 ms
        # a request with a large environment. Read it once, for this service's URL.
        env = self._http.merge_environment_settings(self.url, {}, None, None, None)
        self._http.trust_env = False
        self._send: dict[str, Any] = {"proxies": env["proxies"], "verify": env["verify"]}
        self.purpose = purpose

    @property
    def purpose(self) -> str | None:
        """Sent with every request as ``X-Pdebug-Purpose``; the service records it."""
        value = self._http.headers.get(PURPOSE_HEADER)
        return None if value is None else str(value)

    @purpose.setter
    def purpose(self, text: str | None) -> None:
        if text:
            self._http.headers[PURPOSE_HEADER] = text
        else:
            self._http.headers.pop(PURPOSE_HEADER, None)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None,
                params: dict[str, Any] | None = None) -> Any:
        try:
            resp = self._http.request(method, self.url + path, json=body, params=params,
                                      timeout=self.timeout, **self._send)
        except requests.RequestException:
            raise PdebugError("unreachable", f"the privacy service at {self.url} cannot be "
                              "reached") from None
        try:
            data = resp.json()
        except ValueError:
            raise PdebugError("bad_response", f"the service answered {resp.status_code} "
                              "without JSON", resp.status_code) from None
        if resp.status_code >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            raise PdebugError(err.get("code", "error"), err.get("message", resp.reason),
                              resp.status_code)
        return data

    def close(self) -> None:
        self._http.close()
