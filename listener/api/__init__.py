"""The HTTP API of the listener: requests in, statuses and tracks out."""
