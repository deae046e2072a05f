"""Bayou's Grafana dashboards as code (DESIGN §5).

Empty for now: the dashboards, their generated JSON and the push to Grafana come with the
dashboards issue. This package will only read metric names from ingress and agents.
"""
