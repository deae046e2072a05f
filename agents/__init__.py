"""Bayou agents: the runtime that runs data teams' Python over Kafka, and the built-in agents.

Note: ``agents`` is also the import name of OpenAI's Agents SDK; the two cannot share one
environment. In a Bayou environment ``from agents import ...`` finds this package.
"""
