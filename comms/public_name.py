"""How an incident is named in public: the status page, its JSON and feed, subscriber e-mails and
webhooks all call `incident_public_name`, so the internal title and the INC- reference never reach them.

Communications set a public title (comms.services.incident_public_identity_set); without one the name
is a neutral one made from the public services the incident affects ("Service disruption: Checkout
and Search").
"""

NEUTRAL_TITLE = "Service disruption"


def english_list(names):
    """"Checkout", "Checkout and Search", "Checkout, Search and Login"."""
    names = list(names)
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} and {names[-1]}"


def neutral_public_title(component_names):
    """"Service disruption: Checkout and Search" (no public service: "Service disruption")."""
    names = sorted(set(component_names))
    return f"{NEUTRAL_TITLE}: {english_list(names)}" if names else NEUTRAL_TITLE


def incident_public_name(incident, public_services=None):
    """The incident's name for the public. public_services: its public services, when already loaded."""
    if incident.public_title:
        return incident.public_title
    if public_services is None:
        public_services = [s for s in incident.services.all() if s.is_public]
    return neutral_public_title(s.name for s in public_services)
