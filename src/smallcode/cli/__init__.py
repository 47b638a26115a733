"""Command-line wiring: one module per verb, no logic of its own (see ``main.VERBS``)."""
