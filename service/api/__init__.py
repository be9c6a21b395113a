"""The HTTP layer: thin routers generated from the registry, middleware and error handlers."""
