"""Edge agent tests use the fixtures of tests/conftest.py (packaged, agent_factory)."""
