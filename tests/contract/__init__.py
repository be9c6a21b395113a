"""The SPEC's guarantees checked generically, for every schema the engine serves."""
