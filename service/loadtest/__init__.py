"""`service loadtest`: an httpx load generator with weighted scenarios and a latency report."""
