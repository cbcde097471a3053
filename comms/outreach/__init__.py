"""Direct outreach (issue 16): a message to the contacts of the accounts an incident affects, drafted
from the incident, reviewed and approved like an external update, sent by Celery once per contact."""
