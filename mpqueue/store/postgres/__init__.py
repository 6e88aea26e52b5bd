"""The PostgreSQL backend: one database shared by servers on many hosts.

``store`` maps the store interface onto SQL, ``session`` owns the connection (and its
reconnects), ``listen`` turns NOTIFY into wake-ups, ``schema`` creates and migrates the
tables, ``url`` checks and redacts connection URLs; ``graph``, ``cancels`` and
``pauses`` hold the SQL of workflows, cancelling and pausing.
"""
