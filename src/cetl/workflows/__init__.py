"""What a command does end to end: train a run folder, compare methods, reproduce a paper table,
adapt a user's own data, the demo, export and serve, the generated config reference.

The top of the import graph below the CLI: workflows import every layer beneath them and nothing
beneath imports a workflow (S loaded from a run folder is built by :mod:`cetl.build` and handed
down to :mod:`cetl.source`). ``docs/design.md`` draws the layers.
"""
