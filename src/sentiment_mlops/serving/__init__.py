"""The HTTP API: app factory, routes, authentication, metrics and the prediction log."""
