"""After a change to the public state commits: a new version, and the documents being read re-rendered
once, by the process that made the change, before readers ask (cache.refresh()).

So a spike of readers never pays for rendering after a change: until the new copies are in (the time
of one render) they get the previous ones, then the new. Receivers in invalidation.py call
status_page_changed(); so does code that changes public state without a signal (`.update()`).
"""

from django.db import transaction

from . import cache, documents


def status_page_changed():
    """Something the public status page shows has changed: once the current transaction commits (at
    once outside one) every cached document is stale and those being read are re-rendered. Once per
    commit, however many of its rows call this."""
    connection = transaction.get_connection()
    # run_on_commit holds the callbacks still pending for this transaction (entries whose savepoint
    # was rolled back are gone): a publish saves several public rows, and one refresh covers them all.
    if connection.in_atomic_block and any(entry[1] is _refresh for entry in connection.run_on_commit):
        return
    transaction.on_commit(_refresh, robust=True)


def _refresh():
    pages = {}  # shared: the documents that show the same page build it once
    cache.refresh({key: documents.renderer(key, pages) for key in documents.DOCUMENTS})
