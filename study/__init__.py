"""The study service: configuration (`config`, `presets`), the command line (`cli`,
`commands/`), and one subpackage per concern:

- `study.search`: what to try next (space, samplers, searcher, Optuna's storage);
- `study.run`: how trials run on Ray and how their results are written;
- `study.analysis`: what the results say (report, figures, dashboard attachment).

Dependencies point one way: commands -> run/analysis -> search -> config/errors/writes.
"""
