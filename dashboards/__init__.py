"""Bayou's Grafana dashboards as code (DESIGN §5).

Built with the Grafana Foundation SDK: one module per dashboard (:mod:`.overview`,
:mod:`.ingress_nodes`, :mod:`.agent_workers`, :mod:`.fleet`), their metric names in
:mod:`.metrics` (names only: this package never imports ``ingress`` or ``agents``), the
provisioning files in :mod:`.provisioning`, written by :mod:`.build` into ``generated/`` and
pushed to a running Grafana by :mod:`.push`. :mod:`.snapshot` draws them without a Grafana.
"""
