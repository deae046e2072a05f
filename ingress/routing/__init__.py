"""Route rules (DESIGN §3): MQTT topic → Kafka topic and key, Kafka topic and key → MQTT topic.

:mod:`ingress.routing.rules` holds the rule models and the routers;
:mod:`ingress.routing.rules_file` reads them from a TOML or YAML file.
"""
