"""The anyio shell around the core: one task group per node.

Receive tasks turn frames into events, one timer task fires the core's
deadlines, one event loop owns the ``Node`` and an executor runs the effects
it returns. The runtime executes; it never decides.
"""
