"""Plain helpers (no fixtures) shared by several test modules; test modules never import each
other. Fixtures live in tests/fixtures/."""
