"""Every write in postmortems goes through a function here (one per change); sections by area."""

import re
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import URLValidator
from django.db import transaction
from django.db.models import F, Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from incidents.mailing import subject_line
from incidents.models import (
    Incident,
    RoleAssignment,
    Severity,
    TimelineEvent,
    references_hidden_from,
    references_redacted,
    visible_incident_rows,
)
from incidents.selectors import incident_impact_text
from incidents.services import IncidentError, InvalidTransition, incident_member_add, timeline_event_record

from .models import (
    REVIEW_SECTIONS,
    ActionItem,
    ActionItemReminder,
    ContributingFactor,
    Review,
    ReviewReviewer,
    ReviewTemplate,
)

# ---- Post-incident reviews ----
REVIEW_SECTION_NAMES = tuple(name for name, _label in REVIEW_SECTIONS)
ReviewStatus = Review.Status


class ReviewError(IncidentError):
    """A change the review rules do not allow (the API answers 400, the admin shows a message)."""


class ReviewConflict(ReviewError):
    """A workflow step the review's current state does not allow (the API answers 409)."""


class PeopleNamed(ReviewError):
    """Publishing a review that names people needs the publisher's explicit confirmation."""

    def __init__(self, review, matches):
        self.matches = matches
        names = ", ".join(sorted({m["text"] for m in matches}, key=str.lower))
        super().__init__(
            f"The review of {review.incident.reference} names people ({names}). Blameless reviews describe "
            "systems and decisions rather than individuals: rephrase, or confirm that you want to publish anyway."
        )


class ReviewRequired(InvalidTransition):
    """The close guard's refusal: a refused move, so the incidents API answers it with 409 like the others."""

    def __init__(self, incident, message):
        self.from_status, self.to_status = incident.status, Incident.Status.CLOSED
        Exception.__init__(self, message)


def review_close_guard(incident, to):
    """Registered with incidents.services: an incident whose review is required closes only once it is published."""
    if to != Incident.Status.CLOSED:
        return
    severity = Severity.objects.get(pk=incident.severity_id)
    if not severity.review_required:
        return
    review = Review.objects.filter(incident_id=incident.pk).only("status").first()
    if review is not None and review.status == ReviewStatus.PUBLISHED:
        return
    state = {
        None: "no review has been started",
        ReviewStatus.DRAFT: "its review is still a draft",
        ReviewStatus.IN_REVIEW: "its review is waiting for approval",
    }[review.status if review else None]
    raise ReviewRequired(
        incident,
        f"{incident.reference} needs a published post-incident review before it can be closed "
        f"({severity.label} requires one; {state}).",
    )


# -- prefill from the incident


def _fmt_time(value):
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M %Z}" if value else "not recorded"


def _fmt_duration(start, end):
    if not start or not end:
        return "n/a"
    seconds = max(0, int((end - start).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h {minutes} min"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def review_durations(incident):
    """[(label, text)]: time to detect, acknowledge, mitigate and resolve, and how long the impact lasted."""
    began = incident.started_at or incident.detected_at
    return [
        ("Time to detect (impact start → detection)", _fmt_duration(incident.started_at, incident.detected_at)),
        ("Time to acknowledge (detection → acknowledgement)", _fmt_duration(incident.detected_at, incident.acknowledged_at)),
        ("Time to mitigate (detection → mitigation)", _fmt_duration(incident.detected_at, incident.mitigated_at)),
        ("Time to resolve (detection → resolution)", _fmt_duration(incident.detected_at, incident.resolved_at)),
        ("Duration of impact", _fmt_duration(began, incident.mitigated_at or incident.resolved_at)),
    ]


def review_facts(incident):
    """The incident record as text (severity, services, key times, durations, roles and holders)."""
    services = ", ".join(s.name for s in incident.services.all()) or "none recorded"
    lines = [
        f"Incident: {incident.reference} — {incident.title}",
        f"Severity: {incident.severity}",
        f"Services: {services}",
        f"Status: {incident.get_status_display()}",
        f"Impact started: {_fmt_time(incident.started_at)}",
        f"Detected: {_fmt_time(incident.detected_at)}",
        f"Acknowledged: {_fmt_time(incident.acknowledged_at)}",
        f"Mitigated: {_fmt_time(incident.mitigated_at)}",
        f"Resolved: {_fmt_time(incident.resolved_at)}",
        "",
        *(f"{label}: {text}" for label, text in review_durations(incident)),
        "",
        "Roles:",
    ]
    assignments = RoleAssignment.objects.filter(incident=incident).select_related("user").order_by("assigned_at", "id")
    for assignment in assignments:
        until = f" to {_fmt_time(assignment.relieved_at)}" if assignment.relieved_at else " (current)"
        lines.append(
            f"- {assignment.get_role_display()}: {assignment.user.get_username()}, "
            f"from {_fmt_time(assignment.assigned_at)}{until}"
        )
    if not assignments:
        lines.append("- none recorded")
    return "\n".join(lines)


def _event_line(event, hidden):
    """One timeline row as a sentence about what happened (who did it is left to the facts: blameless)."""
    Kind = TimelineEvent.Kind
    data = references_redacted(event.data or {}, hidden)
    body = event.body.strip()
    if event.kind == Kind.DECLARED:
        text = f"Incident declared (SEV{data.get('severity')})"
    elif event.kind == Kind.STATUS_CHANGED:
        text = f"Status {data.get('from')} → {data.get('to')}" + (" (reopened)" if data.get("reopened") else "")
    elif event.kind == Kind.SEVERITY_CHANGED:
        text = f"Severity SEV{data.get('from')} → SEV{data.get('to')}"
    elif event.kind in (Kind.ROLE_ASSIGNED, Kind.ROLE_RELIEVED):
        role = dict(RoleAssignment.Role.choices).get(data.get("role"), data.get("role"))
        text = f"{role} {'assigned' if event.kind == Kind.ROLE_ASSIGNED else 'relieved'}"
    elif event.kind == Kind.FIELDS_CHANGED:
        text = "Details changed: " + ", ".join(sorted(data))
    elif event.kind in (Kind.MEMBER_ADDED, Kind.MEMBER_REMOVED, Kind.RESTRICTION_CHANGED):
        return None  # who may see the incident is not part of its story
    else:
        text = event.get_kind_display()
    return f"{_fmt_time(event.occurred_at)} — {text}" + (f": {body}" if body else "")


def review_timeline_text(incident):
    events = list(TimelineEvent.objects.filter(incident=incident).order_by("occurred_at", "id"))
    # The review is read by everyone who may see this incident: references to any restricted incident
    # are left out, whoever started the review.
    hidden = references_hidden_from(AnonymousUser(), events)
    return "\n".join(line for line in (_event_line(e, hidden) for e in events) if line)


def review_impact_text(incident):
    began = incident.started_at or incident.detected_at
    lines = [
        "Impact known so far:",
        incident.summary.strip() or incident.title,
        f"Services affected: {', '.join(s.name for s in incident.services.all()) or 'none recorded'}",
        f"Impact from {_fmt_time(began)} to {_fmt_time(incident.mitigated_at or incident.resolved_at)} "
        f"({_fmt_duration(began, incident.mitigated_at or incident.resolved_at)}).",
    ]
    customer_impact = incident_impact_text(incident)
    if customer_impact:
        lines.append(f"Customer reports: {customer_impact}")
    return "\n".join(lines)


def review_prefill(incident, template):
    """The starting text of each section: what the incident record knows, then the template's guidance."""
    known = {
        "summary": incident.summary.strip() or incident.title,
        "customer_impact": review_impact_text(incident),
        "timeline": review_timeline_text(incident),
    }
    sections = {}
    for name in REVIEW_SECTION_NAMES:
        parts = [known.get(name, ""), getattr(template, name, "") if template else ""]
        sections[name] = "\n\n".join(part for part in parts if part)
    return sections


def review_template_default():
    return ReviewTemplate.objects.filter(is_default=True).first() or ReviewTemplate.objects.order_by("name").first()


# -- blameless check

# Names that are also ordinary words (or account names) are not treated as people: "we will mark the
# alert", "the admin page". Extend with REVIEW_BLAMELESS_IGNORE_WORDS.
COMMON_WORDS = frozenset(
    """
    admin administrator root system support ops test user guest service deploy bot api web app job
    will mark bill grant may june april august rose chase hope joy faith grace sky summer autumn winter
    dawn amber ruby pearl crystal iris ivy lily daisy holly penny frank earl duke king queen prince
    price long young white black brown green gray grey wood woods hill hills page cook baker smith
    miller fisher hunter carter cooper turner walker parker bell stone rich drew dean gene lee ray
    max pat don art van al mo ed
    dev prod staging sre team lead staff oncall
    the and for not but all any can new old one two
    """.split()
)


def _blameless_min_length():
    return getattr(settings, "REVIEW_BLAMELESS_MIN_NAME_LENGTH", 3)


def _ignored_words():
    extra = getattr(settings, "REVIEW_BLAMELESS_IGNORE_WORDS", ())
    return COMMON_WORDS | {word.strip().lower() for word in extra if word.strip()}


def people_name_matcher():
    """(compiled regex, {lowercased name: [usernames]}) over the user table; None when no name qualifies."""
    ignored, min_length = _ignored_words(), _blameless_min_length()
    owners = {}
    for username, first, last in get_user_model().objects.values_list("username", "first_name", "last_name"):
        first, last = first.strip(), last.strip()
        for name in (username, first, last, f"{first} {last}".strip()):
            key = " ".join(name.lower().split())
            if len(key) < min_length or all(part in ignored for part in key.split()):
                continue  # too short, or ordinary words only ("Will Mark": "we will mark the alert")
            owners.setdefault(key, [])
            if username not in owners[key]:
                owners[key].append(username)
    if not owners:
        return None, owners
    alternatives = "|".join(re.escape(name).replace(r"\ ", r"\s+") for name in sorted(owners, key=len, reverse=True))
    return re.compile(rf"(?<![\w.@-])(?:{alternatives})(?![\w@-]|\.\w)", re.IGNORECASE), owners


def review_people_named(review, matcher=None, factors=None):
    """Where the review's sections (and contributing factors) name people from the user table.

    [{"section", "section_label", "text", "users"}], one per name and section. Whole words only,
    case-insensitive; names shorter than REVIEW_BLAMELESS_MIN_NAME_LENGTH and ordinary words are ignored.
    The facts block (role holders) is the record, not the narrative, and is not checked.
    """
    pattern, owners = matcher or people_name_matcher()
    if pattern is None:
        return []
    texts = [(name, label, getattr(review, name) or "") for name, label in REVIEW_SECTIONS]
    if factors is None:
        factors = review.factors.all() if review.pk else []
    texts += [("factors", "Contributing factor records", f.description) for f in factors]
    found, seen = [], set()
    for section, label, text in texts:
        for match in pattern.finditer(text):
            written = " ".join(match.group(0).split())
            key = (section, written.lower())
            if key in seen:
                continue
            seen.add(key)
            found.append(
                {"section": section, "section_label": label, "text": written, "users": owners[written.lower()]}
            )
    return found


# -- the workflow


def _lock_review(review):
    """Lock the incident, then the review: the close guard reads the review under the incident's lock."""
    Incident.objects.select_for_update().get(pk=review.incident_id)
    return Review.objects.select_for_update(of=("self",)).select_related("incident").get(pk=review.pk)


def _record(review, actor, action, body, at=None, **data):
    timeline_event_record(
        incident=review.incident,
        kind=TimelineEvent.Kind.REVIEW,
        actor=actor,
        occurred_at=at,
        body=body,
        data={"action": action, "review_id": review.pk, **data},
    )


def _when(at):
    """Now, or an earlier time when writing up history (the demo data does); never the future."""
    now = timezone.now()
    if at is None:
        return now
    if at > now + timedelta(minutes=2):
        raise ReviewError("A review step cannot be dated in the future.")
    return at


def _refuse_if_published(review, what):
    if review.status == ReviewStatus.PUBLISHED:
        raise ReviewConflict(f"The review of {review.incident.reference} is published: reopen it to {what}.")


def _reviewer_add(review, user):
    if review.author_id is not None and user.pk == review.author_id:
        raise ReviewError(f"{user.get_username()} wrote this review and cannot also be its reviewer.")
    reviewer, _created = ReviewReviewer.objects.get_or_create(review=review, user=user)
    return reviewer


@transaction.atomic
def review_create(*, incident, actor, template=None, reviewers=(), at=None):
    """Start the review of an incident from a template, pre-filled from the incident. Once per incident."""
    incident = Incident.objects.select_for_update(of=("self",)).select_related("severity").get(pk=incident.pk)
    existing = Review.objects.filter(incident=incident).first()
    if existing is not None:
        return existing
    if incident.status == Incident.Status.DISMISSED:
        raise ReviewError(f"{incident.reference} was dismissed: there is nothing to review.")
    template = template or review_template_default()
    review = Review.objects.create(
        incident=incident,
        template=template,
        author=actor,
        facts=review_facts(incident),
        **review_prefill(incident, template),
    )
    for user in reviewers:
        _reviewer_add(review, user)
    _record(
        review,
        actor,
        "created",
        "Post-incident review started",
        at=_when(at),
        template=template.name if template else None,
        required=incident.severity.review_required,
    )
    return review


@transaction.atomic
def review_update(*, review, actor, **sections):
    """Edit the sections. In review, a change withdraws the approvals given (they approved other text)."""
    unknown = set(sections) - set(REVIEW_SECTION_NAMES)
    if unknown:
        raise ReviewError(f"These fields cannot be edited here: {', '.join(sorted(unknown))}.")
    review = _lock_review(review)
    changed = [name for name, value in sections.items() if getattr(review, name) != value]
    if not changed:
        return review
    _refuse_if_published(review, "edit it")
    for name in changed:
        setattr(review, name, sections[name])
    review.save(update_fields=[*changed, "updated_at"])
    if review.status == ReviewStatus.IN_REVIEW:
        withdrawn = review.reviewers.filter(approved_at__isnull=False).update(approved_at=None)
        if withdrawn:
            _record(review, actor, "approvals_withdrawn", "Review edited: approvals withdrawn", sections=changed)
    return review


@transaction.atomic
def review_refresh_facts(*, review, actor):
    """Rewrite the facts block from the incident as it is now (times and roles may have changed since)."""
    review = _lock_review(review)
    _refuse_if_published(review, "refresh it")
    facts = review_facts(review.incident)
    if facts != review.facts:
        review.facts = facts
        review.save(update_fields=["facts", "updated_at"])
    return review


@transaction.atomic
def review_factor_add(*, review, actor, category, description):
    review = _lock_review(review)
    _refuse_if_published(review, "change its contributing factors")
    description = description.strip()
    if not description:
        raise ReviewError("A contributing factor needs a description.")
    return ContributingFactor.objects.create(
        review=review, category=ContributingFactor.Category(category), description=description
    )


@transaction.atomic
def review_factor_update(*, factor, actor, category=None, description=None):
    review = _lock_review(factor.review)
    _refuse_if_published(review, "change its contributing factors")
    factor = ContributingFactor.objects.get(pk=factor.pk)
    if category is not None:
        factor.category = ContributingFactor.Category(category)
    if description is not None:
        if not description.strip():
            raise ReviewError("A contributing factor needs a description.")
        factor.description = description.strip()
    factor.save(update_fields=["category", "description"])
    return factor


@transaction.atomic
def review_factor_remove(*, factor, actor):
    review = _lock_review(factor.review)
    _refuse_if_published(review, "change its contributing factors")
    ContributingFactor.objects.filter(pk=factor.pk).delete()


@transaction.atomic
def review_factors_set(*, review, actor, factors):
    """Replace the contributing factors with [{"category", "description"}] (the API's PATCH)."""
    review = _lock_review(review)
    current = [(f.category, f.description) for f in review.factors.all()]
    wanted = [(ContributingFactor.Category(f["category"]).value, f["description"].strip()) for f in factors]
    if current == wanted:
        return review
    _refuse_if_published(review, "change its contributing factors")
    if any(not description for _category, description in wanted):
        raise ReviewError("A contributing factor needs a description.")
    review.factors.all().delete()
    ContributingFactor.objects.bulk_create(
        ContributingFactor(review=review, category=category, description=description) for category, description in wanted
    )
    return review


@transaction.atomic
def review_reviewer_add(*, review, user, actor):
    review = _lock_review(review)
    if review.reviewers.filter(user=user).exists():
        return review.reviewers.get(user=user)
    _refuse_if_published(review, "name reviewers")
    reviewer = _reviewer_add(review, user)
    _record(review, actor, "reviewer_added", "Reviewer named", reviewer=user.get_username())
    return reviewer


@transaction.atomic
def review_reviewer_remove(*, reviewer, actor):
    review = _lock_review(reviewer.review)
    _refuse_if_published(review, "change its reviewers")
    deleted, _ = ReviewReviewer.objects.filter(pk=reviewer.pk).delete()
    if deleted:
        _record(review, actor, "reviewer_removed", "Reviewer removed", reviewer=reviewer.user.get_username())


@transaction.atomic
def review_reviewers_set(*, review, users, actor):
    """Name exactly these reviewers (the API's PATCH); approvals of those who stay are kept."""
    review = _lock_review(review)
    wanted = {user.pk: user for user in users}
    current = {r.user_id: r for r in review.reviewers.select_related("user")}
    if set(wanted) == set(current):
        return review
    _refuse_if_published(review, "change its reviewers")
    for user_id, reviewer in current.items():
        if user_id not in wanted:
            reviewer.delete()
            _record(review, actor, "reviewer_removed", "Reviewer removed", reviewer=reviewer.user.get_username())
    for user_id, user in wanted.items():
        if user_id not in current:
            _reviewer_add(review, user)
            _record(review, actor, "reviewer_added", "Reviewer named", reviewer=user.get_username())
    return review


@transaction.atomic
def review_submit(*, review, actor, at=None):
    """Draft → in review: the named reviewers can now approve it."""
    review = _lock_review(review)
    if review.status == ReviewStatus.IN_REVIEW:
        return review
    _refuse_if_published(review, "submit it again")
    if not review.reviewers.exists():
        raise ReviewConflict(f"Name at least one reviewer before submitting the review of {review.incident.reference}.")
    review.status = ReviewStatus.IN_REVIEW
    review.submitted_at = _when(at)
    review.save(update_fields=["status", "submitted_at", "updated_at"])
    reviewers = list(review.reviewers.values_list("user__username", flat=True))
    _record(
        review, actor, "submitted", "Post-incident review submitted for approval", at=review.submitted_at, reviewers=reviewers
    )
    return review


@transaction.atomic
def review_approve(*, review, actor, at=None):
    """A named reviewer approves the review as it stands. Authors cannot approve their own review."""
    review = _lock_review(review)
    reviewer = review.reviewers.filter(user=actor).first()
    if reviewer is None:
        raise ReviewError(f"Only the named reviewers can approve the review of {review.incident.reference}.")
    if reviewer.approved_at is not None:
        return review
    if review.status != ReviewStatus.IN_REVIEW:
        raise ReviewConflict(
            f"The review of {review.incident.reference} is {review.get_status_display().lower()}: "
            "only a review submitted for approval can be approved."
        )
    if review.author_id == actor.pk:
        raise ReviewError("You wrote this review: another person has to approve it.")
    reviewer.approved_at = _when(at)
    reviewer.save(update_fields=["approved_at"])
    _record(
        review, actor, "approved", "Post-incident review approved", at=reviewer.approved_at, reviewer=actor.get_username()
    )
    return review


@transaction.atomic
def review_publish(*, review, actor, acknowledge_named_people=False, at=None):
    """In review → published, once every named reviewer has approved. Recorded on the incident's timeline.

    When the sections name people, publishing needs acknowledge_named_people=True (the publisher read the
    warning and decided to publish anyway); the names are recorded with the event.
    """
    review = _lock_review(review)
    if review.status == ReviewStatus.PUBLISHED:
        return review
    if review.status == ReviewStatus.DRAFT:
        raise ReviewConflict(f"Submit the review of {review.incident.reference} for approval before publishing it.")
    reviewers = list(review.reviewers.select_related("user"))
    if not reviewers:
        raise ReviewConflict(f"The review of {review.incident.reference} needs at least one named reviewer.")
    pending = [r.user.get_username() for r in reviewers if r.approved_at is None]
    if pending:
        raise ReviewConflict(
            f"The review of {review.incident.reference} is waiting for approval from {', '.join(pending)}."
        )
    named = review_people_named(review)
    if named and not acknowledge_named_people:
        raise PeopleNamed(review, named)
    review.status = ReviewStatus.PUBLISHED
    review.published_at = _when(at)
    review.published_by = actor
    review.save(update_fields=["status", "published_at", "published_by", "updated_at"])
    _record(
        review,
        actor,
        "published",
        "Post-incident review published",
        at=review.published_at,
        approved_by=[r.user.get_username() for r in reviewers],
        people_named_acknowledged=sorted({m["text"] for m in named}, key=str.lower),
    )
    return review


@transaction.atomic
def review_reopen(*, review, actor, reason=""):
    """Back to draft (from in review or published) to change it; approvals given so far are withdrawn."""
    review = _lock_review(review)
    if review.status == ReviewStatus.DRAFT:
        return review
    if review.incident.status == Incident.Status.CLOSED:
        # Closing was allowed because this review was published: it is the record now.
        raise ReviewConflict(
            f"{review.incident.reference} is closed: its review is the final record and cannot be reopened."
        )
    previous = review.status
    review.status = ReviewStatus.DRAFT
    review.published_at = None
    review.published_by = None
    review.save(update_fields=["status", "published_at", "published_by", "updated_at"])
    review.reviewers.update(approved_at=None)
    _record(review, actor, "reopened", reason.strip() or "Post-incident review reopened", previous=previous)
    return review


# ---- Action items ----


class ActionItemError(IncidentError):
    """A change the action-item rules do not allow (the API answers 400, the admin shows a message)."""


ACTION_ITEM_EDITABLE_FIELDS = ("title", "description", "owner", "due_date", "priority", "kind", "review", "tracker_url")
_tracker_url_validator = URLValidator(schemes=["http", "https"])


def action_items_visible_to(user, queryset=None):
    """Action items whose incident the user may see (a restricted incident's items follow it)."""
    queryset = ActionItem.objects.all() if queryset is None else queryset
    return visible_incident_rows(queryset, user, "incident")


def _item_value(value):
    """A field value as the timeline records it: usernames, ISO dates, review ids."""
    if value is None:
        return None
    if isinstance(value, Review):
        return value.pk
    if hasattr(value, "get_username"):
        return value.get_username()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _item_check(item):
    """Validate an item's fields as they are about to be saved."""
    item.title = (item.title or "").strip()
    if not item.title:
        raise ActionItemError("An action item needs a title.")
    if len(item.title) > ActionItem._meta.get_field("title").max_length:
        raise ActionItemError("The title is too long (200 characters at most).")
    if item.priority not in ActionItem.Priority.values:
        raise ActionItemError(f"Unknown priority {item.priority!r}.")
    if item.kind not in ActionItem.Kind.values:
        raise ActionItemError(f"Unknown kind {item.kind!r}.")
    item.tracker_url = (item.tracker_url or "").strip()
    if item.tracker_url:
        try:
            _tracker_url_validator(item.tracker_url)
        except ValidationError:
            raise ActionItemError("The tracker URL must be an http or https address.") from None
    if item.review_id is not None and item.review.incident_id != item.incident_id:
        raise ActionItemError("The review belongs to another incident.")
    if item.owner_id is not None:
        owner = item.owner
        if not owner.is_active:
            raise ActionItemError(f"{owner.get_username()} is not an active user.")


def _owner_admit(item, actor):
    """An owner who may not see the (restricted) incident becomes a member of it, on its timeline."""
    if item.owner_id is not None and not Incident.objects.visible_to(item.owner).filter(pk=item.incident_id).exists():
        incident_member_add(incident=item.incident, user=item.owner, actor=actor)


def action_items_left_notice(incident, user):
    """What a person taken off a restricted incident still owns there (incidents asks when removing a member)."""
    titles = list(
        ActionItem.objects.filter(incident=incident, owner=user, status__in=ActionItem.ACTIVE_STATUSES)
        .order_by("id")
        .values_list("title", flat=True)
    )
    if not titles:
        return []
    shown = ", ".join(f"“{title}”" for title in titles[:3]) + (f" and {len(titles) - 3} more" if len(titles) > 3 else "")
    return [
        f"{user.get_username()} still owns {len(titles)} open action item{'s' if len(titles) != 1 else ''} of "
        f"{incident.reference} ({shown}) and can no longer see {'them' if len(titles) != 1 else 'it'}: reassign "
        f"{'them' if len(titles) != 1 else 'it'}, or add them back."
    ]


def action_item_validate(item):
    """Check an unsaved or edited item as the services would (forms call this to show errors early)."""
    _item_check(item)


@transaction.atomic
def action_items_attach_to_review(*, review):
    """Link the incident's action items that have no review yet to this review (call when creating one)."""
    return ActionItem.objects.filter(incident_id=review.incident_id, review__isnull=True).update(
        review=review, updated_at=timezone.now()
    )


def _item_event(item, actor, action, body, **data):
    timeline_event_record(
        incident=item.incident,
        kind=TimelineEvent.Kind.ACTION_ITEM,
        actor=actor,
        body=body,
        data={"action": action, "item": item.pk, "title": item.title, **data},
    )


@transaction.atomic
def action_item_create(
    *,
    incident,
    title,
    actor,
    description="",
    owner=None,
    due_date=None,
    priority=ActionItem.Priority.MEDIUM,
    kind=ActionItem.Kind.PREVENT,
    review=None,
    tracker_url="",
):
    """Add an action item to an incident; recorded on the incident's timeline.

    It is linked to the incident's review when there is one (an incident has at most one review).
    """
    if review is None:
        review = Review.objects.filter(incident=incident).first()
    item = ActionItem(
        incident=incident,
        review=review,
        title=title,
        description=description or "",
        owner=owner,
        due_date=due_date,
        priority=priority,
        kind=kind,
        tracker_url=tracker_url or "",
        created_by=actor,
    )
    _item_check(item)
    item.save()
    _owner_admit(item, actor)
    details = {name: _item_value(getattr(item, name)) for name in ("owner", "due_date", "priority", "kind", "review")}
    parts = [f"owner {details['owner']}" if details["owner"] else "no owner"]
    if item.due_date:
        parts.append(f"due {item.due_date.isoformat()}")
    _item_event(item, actor, "created", f"Action item added: {item.title} ({', '.join(parts)})", **details)
    return item


def _lock_item(item):
    # Only the item's row is locked: its incident keeps moving while people edit its action items.
    return ActionItem.objects.select_for_update(of=("self",)).select_related("incident").get(pk=item.pk)


@transaction.atomic
def action_item_update(*, item, actor, **fields):
    """Edit an item's details (not its status: action_item_status_set). Before and after go on the timeline."""
    unknown = set(fields) - set(ACTION_ITEM_EDITABLE_FIELDS)
    if unknown:
        raise ActionItemError(f"These fields cannot be edited here: {', '.join(sorted(unknown))}.")
    item = _lock_item(item)
    changes = {}
    for name, value in fields.items():
        if name in ("description", "tracker_url") and value is None:
            value = ""
        old = getattr(item, name)
        if old != value:
            setattr(item, name, value)
            changes[name] = [_item_value(old), _item_value(value)]
    if not changes:
        return item
    _item_check(item)
    changes = {name: change for name, change in changes.items() if change[0] != change[1]}  # e.g. stripped titles
    if not changes:
        return item
    item.save(update_fields=[*changes, "updated_at"])
    if "owner" in changes:
        _owner_admit(item, actor)
    summary = "; ".join(
        f"{name.replace('_', ' ')}: {before or '—'} → {after or '—'}"
        for name, (before, after) in changes.items()
        if name != "description"
    )
    if "description" in changes:
        summary = "; ".join(part for part in (summary, "description edited") if part)
    _item_event(item, actor, "updated", f"Action item changed: {item.title} ({summary})", changes=changes)
    return item


@transaction.atomic
def action_item_status_set(*, item, status, actor, reason=""):
    """Open, in progress, done or won't do (which needs a reason). Finishing stamps completed_at; reopening clears it."""
    status = ActionItem.Status(status)
    reason = (reason or "").strip()
    item = _lock_item(item)
    item.status_changed = False
    if item.status == status and (status != ActionItem.Status.WONT_DO or not reason or reason == item.wont_do_reason):
        return item
    if status == ActionItem.Status.WONT_DO and not reason:
        raise ActionItemError(f"Say why “{item.title}” won't be done.")
    before = item.status
    previous_reason = item.wont_do_reason
    item.status = status
    item.wont_do_reason = reason if status == ActionItem.Status.WONT_DO else ""
    if status in ActionItem.FINISHED_STATUSES:
        if item.completed_at is None or before not in ActionItem.FINISHED_STATUSES:
            item.completed_at = timezone.now()
    else:
        item.completed_at = None
    item.save(update_fields=["status", "wont_do_reason", "completed_at", "updated_at"])
    data = {"from": before, "to": status.value, "completed_at": _item_value(item.completed_at)}
    if status == ActionItem.Status.WONT_DO:
        data["reason"] = reason
    elif previous_reason:
        data["previous_reason"] = previous_reason
    body = f"Action item {status.label.lower()}: {item.title}"
    if status == ActionItem.Status.WONT_DO:
        body += f" — {reason}"
    elif before in ActionItem.FINISHED_STATUSES and status in ActionItem.ACTIVE_STATUSES:
        body = f"Action item reopened ({status.label.lower()}): {item.title}"
    _item_event(item, actor, "status_changed", body, **data)
    item.status_changed = True
    return item


def action_item_bulk_status_set(*, items, status, actor, reason=""):
    """The same status for many items, each in its own transaction: (changed items, {item: error message})."""
    changed, refused = [], {}
    for item in items:
        try:
            updated = action_item_status_set(item=item, status=status, actor=actor, reason=reason)
        except ActionItemError as error:
            refused[item] = str(error)
            continue
        if updated.status_changed:
            changed.append(updated)
    return changed, refused


# Reminders. The sweep (hourly) inserts one row per item, day and kind that is due today (a second
# sweep, on another worker or an hour later, inserts nothing new); each pending row is then sent by
# its own task, which claims it pending → sending with a conditional UPDATE first, so a duplicate
# task does nothing. At send time the item is read again: done, won't do, no longer due, or an owner
# who may not see the (restricted) incident, and the reminder is skipped instead of sent.


def reminder_kinds_for(due_date, today):
    """Which reminders an active item due on due_date gets today."""
    Kind = ActionItemReminder.Kind
    if due_date is None:
        return []
    if due_date >= today:
        return [Kind.DUE_SOON] if (due_date - today).days <= settings.ACTION_ITEM_REMINDER_DAYS_BEFORE else []
    kinds = [Kind.OVERDUE]
    if (today - due_date).days > settings.ACTION_ITEM_ESCALATE_AFTER_DAYS:
        kinds.append(Kind.ESCALATION)
    return kinds


def _retry_cutoff(now):
    return now - timedelta(minutes=settings.ACTION_ITEM_REMINDER_RETRY_MINUTES)


def action_item_reminders_plan(*, today=None, now=None):
    """Insert today's reminder rows (duplicates are ignored) and return the ids of those to send.

    Returned: today's pending rows and claims stuck in "sending" for longer than the retry time.
    Rows of earlier days that never went out are skipped as expired (a reminder is about its day).
    """
    now = now or timezone.now()
    today = today or timezone.localdate(now)
    horizon = today + timedelta(days=settings.ACTION_ITEM_REMINDER_DAYS_BEFORE)
    due = ActionItem.objects.filter(
        status__in=ActionItem.ACTIVE_STATUSES, due_date__isnull=False, due_date__lte=horizon
    ).values_list("pk", "due_date", "owner_id")
    rows = [
        ActionItemReminder(item_id=pk, date=today, kind=kind)
        for pk, due_date, owner_id in due.iterator(chunk_size=2000)
        for kind in reminder_kinds_for(due_date, today)
        if owner_id is not None or kind == ActionItemReminder.Kind.ESCALATION
    ]
    ActionItemReminder.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    ActionItemReminder.objects.filter(
        date__lt=today, status__in=(ActionItemReminder.Status.PENDING, ActionItemReminder.Status.SENDING)
    ).update(status=ActionItemReminder.Status.SKIPPED, skipped_reason="expired: not sent on its day")
    to_send = ActionItemReminder.objects.filter(date=today).filter(
        Q(status=ActionItemReminder.Status.PENDING)
        | Q(status=ActionItemReminder.Status.SENDING, claimed_at__lt=_retry_cutoff(now))
    )
    return list(to_send.order_by("pk").values_list("pk", flat=True))


def _reminder_recipient(reminder):
    """(user or None, address) the reminder goes to, or (None, "") when there is nobody."""
    item = reminder.item
    if reminder.kind == ActionItemReminder.Kind.ESCALATION:
        commander = item.incident.commander
        if commander is not None and commander.is_active and commander.email:
            return commander, commander.email
        return None, item.incident.severity.escalation_contact or ""
    owner = item.owner
    if owner is not None and owner.is_active and owner.email:
        return owner, owner.email
    return None, ""


def _reminder_skip_reason(reminder, user, address, today):
    item = reminder.item
    if item.status not in ActionItem.ACTIVE_STATUSES:
        return f"the item is {item.get_status_display().lower()}"
    if reminder.date != today:
        return "expired: not sent on its day"
    if reminder.kind not in reminder_kinds_for(item.due_date, today):
        return "no longer due for this reminder (due date changed)"
    if not address:
        return "nobody to send it to (no owner, commander or escalation contact with an e-mail address)"
    if user is not None and not Incident.objects.visible_to(user).filter(pk=item.incident_id).exists():
        return f"{user.get_username()} may not see the restricted incident"
    if user is None and item.incident.is_restricted:
        return "the incident is restricted and the escalation contact is not a person who may see it"
    return ""


def _reminder_message(reminder, address, today):
    item = reminder.item
    context = {
        "item": item,
        "incident": item.incident,
        "kind": reminder.kind,
        "days_left": (item.due_date - today).days,
        "days_overdue": (today - item.due_date).days,
        "item_url": settings.SITE_URL + reverse("admin:postmortems_actionitem_change", args=[item.pk]),
        "incident_url": settings.SITE_URL + reverse("admin:incidents_incident_change", args=[item.incident_id]),
        "escalate_after_days": settings.ACTION_ITEM_ESCALATE_AFTER_DAYS,
    }
    name = "escalation" if reminder.kind == ActionItemReminder.Kind.ESCALATION else "reminder"
    subject = subject_line(render_to_string(f"postmortems/email/action_item_{name}_subject.txt", context))
    body = render_to_string(f"postmortems/email/action_item_{name}.txt", context)
    return EmailMessage(subject=subject, body=body, to=[address])


def action_item_reminder_send(*, reminder_id, now=None):
    """Send one reminder at most once: claim it, read the item again, send, mark it sent.

    Returns the reminder's final status, or None when another task had claimed it. If sending fails
    the claim is given back (pending) and the error raised, so the task's retry sends it.
    """
    now = now or timezone.now()
    today = timezone.localdate(now)
    Status = ActionItemReminder.Status
    claimed = (
        ActionItemReminder.objects.filter(pk=reminder_id)
        .filter(Q(status=Status.PENDING) | Q(status=Status.SENDING, claimed_at__lt=_retry_cutoff(now)))
        .update(status=Status.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    )
    if not claimed:
        return None
    reminder = ActionItemReminder.objects.select_related(
        "item__owner", "item__incident__commander", "item__incident__severity"
    ).get(pk=reminder_id)
    user, address = _reminder_recipient(reminder)
    reason = _reminder_skip_reason(reminder, user, address, today)
    if reason:
        ActionItemReminder.objects.filter(pk=reminder_id, status=Status.SENDING).update(
            status=Status.SKIPPED, skipped_reason=reason[:200]
        )
        return Status.SKIPPED
    message = _reminder_message(reminder, address, today)
    try:
        message.send()
    except Exception:
        ActionItemReminder.objects.filter(pk=reminder_id, status=Status.SENDING).update(status=Status.PENDING)
        raise
    ActionItemReminder.objects.filter(pk=reminder_id).update(
        status=Status.SENT, sent_at=timezone.now(), recipient=address
    )
    return Status.SENT
