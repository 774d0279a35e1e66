"""Defaults of the robustness report, in a module light enough for the CLI to import.

`insgd-study --help` builds every subcommand's parser; importing numpy (via
`study.analysis.summary`) just to print a default would slow every command down.
"""

DEFAULT_TOLERANCE = 0.01
"""The lr window keeps lrs within one accuracy point of the best."""

DEFAULT_BINS = 8
"""Log-spaced lr bins for studies that did not sample a grid."""

DEFAULT_LEVELS = (0.5, 0.9, 0.95)
"""A range keeps at least this fraction of the variant's gain over chance (`--levels`)."""
