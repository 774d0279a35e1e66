"""What the results say: per-trial metrics, bootstrap intervals, lr ranges, the report model
(`robustness`), its rendering (`report`), figures, paper numbers, and the report attached
to the Optuna study for optuna-dashboard (`dashboard`).

Reads the database only. May import `study.search` (Optuna's storage), `study.config`,
`study.presets`, `study.errors`, `study.terminal` and `storage`; never `study.run` or
`study.commands`.
"""
