"""Command line and local tooling (the embedded default) for assessment-refresh."""
