"""Bayou's command line and process composition; the parts live in ingress, agents, dashboards."""
