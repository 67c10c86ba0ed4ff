"""JupyterHub with the pdebug privacy service (see docs/deploy-hub.md).

The service runs as its own OS user ``pdebug``, which alone can read /srv/pdebug (the data,
the policy and the ledger). Users reach it only through hub tokens whose scopes their roles
grant; their kernels find it through ``PDEBUG_URL`` and ``JUPYTERHUB_API_TOKEN``.
"""

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

SERVICE_URL = "http://127.0.0.1:10101"  # where the service listens (a host the servers reach)

# -- what pdebug's scopes mean ----------------------------------------------------------------
c.JupyterHub.custom_scopes = {
    "custom:pdebug:query": {
        "description": "Spend differential-privacy budget on new aggregate releases, read "
                       "dataset schemas, one's own budget and past releases.",
    },
    "custom:pdebug:audit": {
        "description": "Read and verify pdebug's audit log.",
    },
    "custom:pdebug:admin": {
        "description": "Everything on pdebug, including grants of extra budget.",
        "subscopes": ["custom:pdebug:query", "custom:pdebug:audit"],
    },
}

# -- who holds them ---------------------------------------------------------------------------
# Each role also grants the hub's access scope for the service: the service refuses (403) a
# token without it, whatever else it holds. Grant the custom scopes unfiltered; a filtered
# grant such as "custom:pdebug:query!user=x" grants nothing on pdebug.
ACCESS = "access:services!service=pdebug"
c.JupyterHub.load_roles = [
    {"name": "pdebug-analyst", "groups": ["data-science"],
     "scopes": ["custom:pdebug:query", ACCESS]},
    {"name": "pdebug-auditor", "users": ["privacy-officer"],
     "scopes": ["custom:pdebug:audit", ACCESS]},
    {"name": "pdebug-admin", "users": ["data-steward"],
     "scopes": ["custom:pdebug:admin", ACCESS]},
]

# -- the service ------------------------------------------------------------------------------
# Hub-managed: the hub starts it and passes JUPYTERHUB_API_TOKEN, JUPYTERHUB_API_URL,
# JUPYTERHUB_SERVICE_URL and JUPYTERHUB_SERVICE_PREFIX. "user" makes the hub drop to that OS
# user before it runs the command (the hub must run as root for that). For a hub that does
# not run as root, run the service under systemd instead (docs/deploy-hub.md) and register it
# here with "url" and "api_token" but no "command".
c.JupyterHub.services = [
    {
        "name": "pdebug",
        "url": SERVICE_URL,
        "user": "pdebug",
        "cwd": "/srv/pdebug",
        "command": ["/opt/pdebug/bin/pdebug-jupyter", "serve", "--hub",
                    "--policy", "/srv/pdebug/policy.toml"],
        # how long the service trusts the hub's answer about a token: a revoked token keeps
        # working (and spending its owner's budget) at most this long
        "environment": {"PDEBUG_HUB_CACHE_SECONDS": "60"},
        "display": False,  # a JSON API, nothing to show on the hub's home page
    },
]

# -- what a user's kernel sees ----------------------------------------------------------------
# The single-user server's JUPYTERHUB_API_TOKEN (inherited by its kernels) gets the subset of
# these scopes that its user holds, so `pdebug_jupyter.connect()` works with no arguments for
# an analyst and is refused for anyone else. The first two are the hub's defaults.
c.Spawner.server_token_scopes = [
    "users:activity!user",
    "access:servers!server",
    ACCESS,
    "custom:pdebug:query",
    "custom:pdebug:audit",
]
c.Spawner.environment = {"PDEBUG_URL": f"{SERVICE_URL}/services/pdebug/api/v1"}

# -- the rest is an ordinary hub --------------------------------------------------------------
c.JupyterHub.bind_url = "http://:8000"  # put TLS in front of it, or set ssl_cert/ssl_key
c.JupyterHub.load_groups = {"data-science": {"users": ["alice", "bob"]}}
c.Authenticator.allowed_users = {"alice", "bob", "data-steward", "privacy-officer"}
