"""Push the dashboards to a running Grafana over its HTTP API (grafana-client).

Idempotent: each dashboard is saved under its own uid with ``overwrite: True`` into the folder
"Bayou" (uid ``bayou``), which is looked up by uid and created only when missing. Pushing
again updates the same dashboards (Grafana bumps their version); nothing is duplicated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import niquests
from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaUnauthorizedError,
    TokenAuth,
)

from dashboards.catalog import all_dashboards
from dashboards.provisioning import FOLDER_TITLE, FOLDER_UID


class PushError(Exception):
    """Grafana refused or could not be reached; the message says which and what to check."""


@dataclass(frozen=True)
class Pushed:
    """What the push did to one dashboard."""

    uid: str
    action: Literal["created", "updated"]
    version: int
    url: str


def _missing(exc: GrafanaException) -> bool:
    return isinstance(exc, GrafanaClientError) and exc.status_code == 404


def _ensure_folder(api: Any) -> str:
    try:
        api.folder.get_folder(FOLDER_UID)
    except GrafanaException as exc:
        if not _missing(exc):
            raise
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
    return FOLDER_UID


def _exists(api: Any, uid: str) -> bool:
    try:
        api.dashboard.get_dashboard(uid)
    except GrafanaException as exc:
        if not _missing(exc):
            raise
        return False
    return True


def _push_one(api: Any, uid: str, model: Mapping[str, Any], folder_uid: str) -> Pushed:
    existed = _exists(api, uid)
    # No numeric id: Grafana matches by uid, so the same JSON fits any Grafana.
    dashboard = {**model, "uid": uid, "id": None}
    body = {
        "dashboard": dashboard,
        "folderUid": folder_uid,
        "overwrite": True,
        "message": "bayou dashboards push",
    }
    answer = api.dashboard.update_dashboard(body)
    return Pushed(
        uid=str(answer.get("uid", uid)),
        action="updated" if existed else "created",
        version=int(answer["version"]),
        url=str(answer.get("url", "")),
    )


def push(
    url: str,
    token: str,
    dashboards: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    timeout: float = 10.0,
) -> list[Pushed]:
    """Save ``dashboards`` (default: every Bayou dashboard) to the Grafana at ``url`` with
    the service-account or API ``token``; raise :class:`PushError` on any refusal."""
    boards = all_dashboards() if dashboards is None else dashboards
    auth = TokenAuth(token)  # type: ignore[no-untyped-call]  # grafana-client is untyped
    api: Any = GrafanaApi.from_url(url, credential=auth, timeout=timeout)
    try:
        folder_uid = _ensure_folder(api)
        return [_push_one(api, uid, model, folder_uid) for uid, model in boards.items()]
    except GrafanaUnauthorizedError:
        raise PushError(
            f"Grafana at {url} refused the token (HTTP 401): check --url and the token "
            "(a service account token with the Editor role)"
        ) from None
    except GrafanaException as exc:
        status = f"HTTP {exc.status_code}" if exc.status_code else "no answer"
        raise PushError(f"Grafana at {url}: {status}: {exc.message}") from None
    except niquests.exceptions.RequestException as exc:
        raise PushError(
            f"cannot reach Grafana at {url} ({type(exc).__name__}): is it running, is --url right?"
        ) from None
