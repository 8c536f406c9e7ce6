"""The prediction log's schema, one revision per file, oldest first."""
