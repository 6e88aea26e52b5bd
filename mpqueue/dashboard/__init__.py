"""The web dashboard (``mpqueue dashboard``, the ``dashboard`` extra): server-rendered
pages over one store, read through the ``Store`` interface only.

- ``views.py``: what each page shows, read from the store (no web types);
- ``actions.py``: the state changes a page can ask for (requeue, cancel, delete,
  purge, scheduled re-drive), their input checked before anything is written;
- ``app.py``: the Starlette app: routes, the token and CSRF checks, read-only mode,
  the templates (Jinja2, escaping everything).

The dashboard never unpickles: it shows arguments and results from the text previews
in the record (``mpqueue/previews.py``). Nothing here is imported by the rest of
mpqueue, so Starlette is needed only by whoever runs the dashboard.
"""
