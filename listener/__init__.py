"""listener service."""
