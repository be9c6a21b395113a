"""Request -> plan: parse the query string, validate it against the registry, freeze a plan."""
