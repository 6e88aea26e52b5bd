"""``mpqueue serve``: a coordinator process and one child process per worker slot.

``coordinator`` runs the loop; ``pacing`` decides how much it claims, ``ledger`` keeps
its outcomes and claimed jobs, ``deadlines`` kills jobs past their timeout, ``handoff``
follows jobs producers hand to its children, ``backoff`` waits out a failing store.
``pool`` starts and replaces the children, ``child`` is what runs in them, ``protocol``
holds the typed messages on their pipes and their framing, ``recovery`` takes back the
jobs of servers that died, ``containment`` keeps a job's processes inside its child.
``launcher`` runs a server as a child process of an ``Executor``.
"""
