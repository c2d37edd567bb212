"""The grid: which runs an experiment trains, and how they are cut into compiled calls.

:mod:`vgjax.grid.plan` turns a :class:`~vgjax.config.Config` and a :class:`~vgjax.config.Grid`
into a :class:`~vgjax.grid.plan.Plan` (the run table, padded sizes, chunk size, device mesh,
and one program per group of widths); :mod:`vgjax.grid.width_groups` chooses those groups.
Nothing here compiles or trains: that is :mod:`vgjax.run`.
"""
