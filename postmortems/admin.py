"""The postmortems admin; sections by area."""

# ---- Post-incident reviews ----


# ---- Action items ----
