"""What to try next: the search space, the samplers, the Ray searcher over Optuna, and the
driver's Optuna storage.

May import `study.config`, `study.errors`, `study.writes` and `storage`; never `study.run`
or `study.analysis` (the run asks the search, not the other way round).
"""
