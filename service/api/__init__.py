"""The HTTP edge: routes, dependencies, error handlers and middleware."""
