"""Grafana provisioning files: Bayou's two data sources and the provider of its dashboards.

Grafana reads these from ``/etc/grafana/provisioning/{datasources,dashboards}/`` at start.
The MQTT password is never written here: ``secureJsonData.password`` is the reference
``$BAYOU_GRAFANA_MQTT_PASSWORD``, which Grafana replaces with that environment variable of its
own process when it reads the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import yaml

from dashboards import datasources

MQTT_PASSWORD_ENV: Final = "BAYOU_GRAFANA_MQTT_PASSWORD"
FOLDER_TITLE: Final = "Bayou"
FOLDER_UID: Final = "bayou"
DASHBOARDS_PATH: Final = "/var/lib/grafana/dashboards/bayou"
"""Where the provider reads the dashboard JSON, inside the Grafana container."""


@dataclass(frozen=True)
class Sources:
    """Where Grafana finds Prometheus and Bayou's MQTT listener, as Grafana's server sees them.

    ``mqtt_client_id`` is left to the plugin by default: Bayou closes a connection whose client
    id connects again (takeover), so two Grafana servers sharing one id would keep evicting
    each other.
    """

    prometheus_url: str = "http://localhost:9090"
    mqtt_uri: str = "tcp://localhost:1883"
    mqtt_username: str = "grafana"
    mqtt_client_id: str | None = None


def datasources_config(sources: Sources) -> dict[str, Any]:
    """The data sources file (``provisioning/datasources/bayou.yaml``)."""
    mqtt_json: dict[str, Any] = {"uri": sources.mqtt_uri, "username": sources.mqtt_username}
    if sources.mqtt_client_id:
        mqtt_json["clientID"] = sources.mqtt_client_id
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Bayou Prometheus",
                "type": datasources.PROMETHEUS_TYPE,
                "uid": datasources.PROMETHEUS_UID,
                "access": "proxy",
                "url": sources.prometheus_url,
                "isDefault": True,
                "editable": False,
            },
            {
                "name": "Bayou MQTT",
                "type": datasources.MQTT_TYPE,
                "uid": datasources.MQTT_UID,
                "access": "proxy",
                "editable": False,
                "jsonData": mqtt_json,
                # An environment reference Grafana expands, not the secret itself.
                "secureJsonData": {"password": f"${MQTT_PASSWORD_ENV}"},
            },
        ],
    }


def dashboards_config(path: str = DASHBOARDS_PATH) -> dict[str, Any]:
    """The dashboard provider file (``provisioning/dashboards/bayou.yaml``): the JSON in
    ``path``, in the folder "Bayou"."""
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "bayou",
                "orgId": 1,
                "folder": FOLDER_TITLE,
                "folderUid": FOLDER_UID,
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }


def to_yaml(config: dict[str, Any]) -> str:
    """``config`` as YAML with sorted keys (stable output for the committed files)."""
    text: str = yaml.safe_dump(config, sort_keys=True, default_flow_style=False)
    return text
