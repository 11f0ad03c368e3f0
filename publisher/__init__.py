"""publisher service."""
