"""Shared code of the AceSteps services."""
