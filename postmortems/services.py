"""Every write in postmortems goes through a function here (one per change); sections by area."""

# ---- Post-incident reviews ----


# ---- Action items ----
