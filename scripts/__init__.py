"""The suite's command-line scripts: `python -m scripts.<name> --help` from the repository (tables, figures,
benchmarks, demos, the E2E scorer); the common ones are also console commands (pyproject.toml)."""
