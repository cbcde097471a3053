"""The Statuspage v2 public JSON documents, field for field (see ../shared/reference/INTEGRATIONS.md).

Built only from the public objects of `selectors.status_page()`: nothing else reaches these dicts.
"""

import zoneinfo

from django.conf import settings

from . import public_ids


def time_zone_name():
    return getattr(settings, "STATUS_PAGE_TIME_ZONE", "") or settings.TIME_ZONE


def _tz():
    return zoneinfo.ZoneInfo(time_zone_name())


def time(value):
    """Statuspage's timestamps: ISO 8601 in the page's time zone, with milliseconds and an offset."""
    if value is None:
        return None
    return value.astimezone(_tz()).isoformat(timespec="milliseconds")


def page_json(page):
    return {
        "id": public_ids.page_id(),
        "name": settings.STATUS_PAGE_NAME,
        "url": settings.SITE_URL + "/status/",
        "time_zone": time_zone_name(),
        "updated_at": time(page.updated_at),
    }


def status_json(page):
    return {"indicator": page.status.indicator, "description": page.status.description}


def component_json(component, page):
    updated = time(component.updated_at or page.updated_at)
    data = {
        "id": component.id,
        "name": component.name,
        "status": component.status,
        "created_at": updated,  # services carry no creation time; the last public change stands in
        "updated_at": updated,
        "position": component.position,
        "description": None,
        "showcase": False,
        "start_date": None,
        "group_id": component.group.id if not component.is_group and component.group else None,
        "page_id": public_ids.page_id(),
        "group": component.is_group,
        "only_show_if_degraded": False,
    }
    if component.is_group:
        data["components"] = [child.id for child in component.components]
    return data


def update_json(update, parent):
    at = time(update.published_at)
    body = update.body
    if update.is_correction:
        body = f"Correction to the update of {time(update.corrects.published_at)}: {body}"
    return {
        "id": update.id,
        "status": update.status,
        "body": body,
        "incident_id": parent.id,
        "created_at": at,
        "updated_at": at,
        "display_at": at,
        "affected_components": [
            {
                "code": affected.component.id,
                "name": affected.component.long_name,
                "old_status": affected.old_status,
                "new_status": affected.new_status,
            }
            for affected in update.affected
        ],
        "deliver_notifications": True,
        "custom_tweet": None,
        "tweet_id": None,
    }


def incident_json(incident, page):
    return {
        "id": incident.id,
        "name": incident.name,
        "status": incident.status,
        "created_at": time(incident.created_at),
        "updated_at": time(incident.updated_at),
        "monitoring_at": time(incident.monitoring_at),
        "resolved_at": time(incident.resolved_at),
        "impact": incident.impact,
        "shortlink": incident.url,
        "started_at": time(incident.started_at),
        "page_id": public_ids.page_id(),
        "incident_updates": [update_json(update, incident) for update in incident.updates],
        "components": [component_json(component, page) for component in incident.components],
    }


def maintenance_json(maintenance, page):
    data = incident_json(maintenance, page)
    data["scheduled_for"] = time(maintenance.scheduled_for)
    data["scheduled_until"] = time(maintenance.scheduled_until)
    return data


def components_list(page):
    return [component_json(item, page) for item in page.groups_flat]


def summary(page):
    return {
        "page": page_json(page),
        "components": components_list(page),
        "incidents": [incident_json(i, page) for i in page.unresolved],
        "scheduled_maintenances": [
            maintenance_json(m, page) for m in (*page.active_maintenances, *page.upcoming_maintenances)
        ],
        "status": status_json(page),
    }


def status(page):
    return {"page": page_json(page), "status": status_json(page)}


def components(page):
    return {"page": page_json(page), "components": components_list(page)}


def incidents(page):
    return {"page": page_json(page), "incidents": [incident_json(i, page) for i in page.incidents]}


def unresolved(page):
    return {"page": page_json(page), "incidents": [incident_json(i, page) for i in page.unresolved]}


def scheduled_maintenances(page):
    return {
        "page": page_json(page),
        "scheduled_maintenances": [maintenance_json(m, page) for m in page.maintenances],
    }
