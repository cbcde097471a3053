"""The comms admin; the webhook and status-page admins live in admin_webhooks.py and admin_status.py."""

# ---- Updates and templates ----


# ---- Subscribers and deliveries ----
