"""An incident's public identity: the public title and impact statement communications set
(how the name is used: comms/public_name.py)."""

import re

from incidents.models import Incident
from incidents.services import incident_update

from .updates import PUBLISH_EXTERNAL_PERMISSION, UpdateError, UpdatePermissionError

REFERENCE_RE = re.compile(r"\bINC-?\d+\b", re.IGNORECASE)


def incident_public_identity_set(*, incident, actor, public_title, public_impact):
    """Set the public title and impact statement (communications only). Both may be empty.

    The internal reference is refused in them: it must never reach the public. The change is an
    incident edit like any other (timeline, version), made through the incidents service.
    """
    if actor is not None and not actor.has_perm(PUBLISH_EXTERNAL_PERMISSION):
        raise UpdatePermissionError(
            "Only the Communications group (or someone allowed to publish external updates) sets what the public is told."
        )
    public_title, public_impact = (public_title or "").strip(), (public_impact or "").strip()
    if len(public_title) > Incident._meta.get_field("public_title").max_length:
        raise UpdateError("The public title is too long (200 characters at most).")
    for field, text in (("public_title", public_title), ("public_impact", public_impact)):
        if REFERENCE_RE.search(text):
            error = UpdateError("The internal reference (INC-…) is never shown publicly: leave it out.")
            error.field = field
            raise error
    return incident_update(incident=incident, actor=actor, public_title=public_title, public_impact=public_impact)
