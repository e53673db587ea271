"""The REST API: authenticates, validates, publishes refresh requests, awaits replies."""
