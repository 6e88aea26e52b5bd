"""``mpqueue serve``: a coordinator process and one child process per worker slot.

``coordinator`` runs the loop, ``pool`` starts and replaces the children, ``child`` is
what runs in them, ``protocol`` frames what they send back, ``recovery`` takes back the
jobs of servers that died, ``containment`` keeps a job's processes inside its child.
"""
