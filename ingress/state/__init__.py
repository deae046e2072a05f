"""What a node knows besides its connections: indexes kept in memory, no connection logic.

:mod:`ingress.state.sessions` is the sessions index materialised from ``bayou.sessions``,
:mod:`ingress.state.retained` the retained messages from ``bayou.retained`` (both compacted
Kafka topics, DESIGN §2), :mod:`ingress.state.subscriptions` who on this node subscribes to what.
"""
