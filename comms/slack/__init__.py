"""The Slack app (issue 13): a channel per incident, `/incident`, buttons, and notes captured from chat.

Modules: conf (settings, the Web API client), signing (request verification), commands (parsing),
blocks (messages, the header, the modal), people (Slack user ↔ Django user), actions (what Slack
asks of an incident, through the incidents and comms services), outbox (Web API calls as rows, run by
Celery with retries), inbound (events from Slack), receivers (incident changes → outbox), views,
urls, tasks, admin. The admin stays the record: Slack only ever calls the same services.
"""
