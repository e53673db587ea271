"""Benchmarks for assessment-refresh (GitHub issue 5): `python -m bench`.

Every figure is printed next to a floor measured in the same run on the same
machine (in-process refresh, bare Kafka echo), because absolute numbers on a
shared 2-core box say little on their own; the ratio is what product changes
should move. The bench builds its own world (fresh database, fresh topics per
scenario) and never touches the product's data or code.
"""
