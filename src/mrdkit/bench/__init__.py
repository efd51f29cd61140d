"""The paper's experiments (registered), the report, and the demo."""
