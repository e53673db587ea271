"""Code shared by the API and the consumer: wire contract, settings, schema, clients.

No business rules live here; the refresh rules are in ``consumer.refresh_rules``.
"""
