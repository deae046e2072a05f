"""A query of the Grafana MQTT data source plugin (grafana/mqtt-datasource), as SDK targets.

The Foundation SDK generates builders for the data sources Grafana ships (Prometheus, Loki,
...); the MQTT data source is a separate plugin with no schema in the SDK, so there is no
builder for its query. The SDK's panels take any ``Builder[cogvariants.Dataquery]`` as a
target and encode it with its ``to_json``, so this module defines that pair for the plugin's
query model (``MqttQuery`` in the plugin's src/types.ts: ``refId``, ``topic``, and the
``datasource`` reference every query carries).
"""

from __future__ import annotations

from typing import Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from dashboards import datasources


class MqttQuery(cogvariants.Dataquery):
    """One subscription of a panel: an MQTT topic filter (``+`` and ``#`` allowed)."""

    def __init__(self, topic: str, ref_id: str = "A", datasource: DataSourceRef | None = None):
        self.topic = topic
        self.ref_id = ref_id
        self.datasource = datasource or datasources.mqtt()

    def to_json(self) -> dict[str, object]:
        return {"refId": self.ref_id, "topic": self.topic, "datasource": self.datasource}


class Mqtt(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builds an :class:`MqttQuery` the way the SDK's own query builders do."""

    def __init__(self, topic: str) -> None:
        self._internal = MqttQuery(topic)

    def build(self) -> MqttQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self
