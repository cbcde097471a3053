"""The public status page under /status/: HTML, Atom and Statuspage v2 JSON."""

app_name = "status"
urlpatterns = []
