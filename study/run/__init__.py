"""How trials run: the Ray session, the trainable on the workers, the driver's result
recorder and its writes, progress lines, warm-up and the launch itself (`runner`).

May import `study.search`, `study.analysis` (the report a launch attaches when it ends),
`study.config`, `study.errors`, `study.writes`, `trainers` and `storage`; never
`study.commands`. Nothing below imports `study.run`.
"""
