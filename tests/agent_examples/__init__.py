"""Example agent modules loaded by tests (``bayou worker --agents tests.agent_examples.x``)."""
