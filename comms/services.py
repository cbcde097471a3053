"""Every write in comms goes through a function here (one per change); sections by area."""

# ---- Updates and templates ----


# ---- Subscribers and deliveries ----


def update_deliveries_create(*, update):
    """Called by the publishing service inside its transaction: one delivery per recipient of a
    published update, sent by Celery after commit. (Placeholder until the deliveries work lands.)"""
    return []


# ---- Outbound webhooks ----


# ---- Status page: scheduled maintenance ----
