"""Demo data for a newcomer: people, services and about four months of incidents.

    python manage.py seed_demo [--seed 42] [--incidents 120]

Everything is written through incidents.services with backdated times, so the timeline, the
timestamps and the role history look exactly as if people had worked the incidents. The command
is idempotent: users, groups and services are looked up before they are created, an existing
password is never changed, and incidents are only added to a database that has none.
"""

import random
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from incidents import services as svc
from incidents.demo import demo_steps_run
from incidents.demo_accounts import demo_accounts
from incidents.models import Incident, RoleAssignment, Service, ServiceGroup, Severity

Status = Incident.Status
Role = RoleAssignment.Role

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin"
DEMO_PASSWORD = "demo-password"
DAYS = 120

# username, first name, last name, group
PEOPLE = [
    ("alice.nguyen", "Alice", "Nguyen", "Responders"),
    ("bob.okafor", "Bob", "Okafor", "Responders"),
    ("carmen.diaz", "Carmen", "Díaz", "Responders"),
    ("dev.patel", "Dev", "Patel", "Responders"),
    ("erin.walsh", "Erin", "Walsh", "Communications"),
    ("farid.haddad", "Farid", "Haddad", "Communications"),
    ("grace.kim", "Grace", "Kim", "Viewers"),
]

# group name, position, [(name, slug, public, team, description)]
SERVICES = [
    (
        "Customer-facing",
        1,
        [
            ("Storefront", "storefront", True, "Web", "The public web shop: catalogue, product pages, basket."),
            ("Checkout", "checkout", True, "Payments", "Basket to order: address, payment, confirmation."),
            ("Mobile API", "mobile-api", True, "Mobile", "The API behind the iOS and Android apps."),
        ],
    ),
    (
        "Accounts and messaging",
        2,
        [
            (
                "Login and SSO",
                "login-sso",
                True,
                "Identity",
                "Sign-in, sessions, SAML and OIDC for business customers.",
            ),
            ("Notifications", "notifications", True, "Messaging", "Order e-mails, SMS and push notifications."),
            ("Search", "search", False, "Discovery", "Product search and autocomplete."),
        ],
    ),
    (
        "Infrastructure",
        3,
        [
            ("Primary database", "primary-db", False, "Platform", "The PostgreSQL cluster behind orders and accounts."),
            (
                "Message queue",
                "message-queue",
                False,
                "Platform",
                "The broker that carries background jobs and events.",
            ),
        ],
    ),
]

# slug -> [(title, summary)]; {region} and {provider} are filled in.
PROBLEMS = {
    "storefront": [
        (
            "Storefront returning 502 for a share of requests",
            "The load balancer reports 502s from a subset of web nodes; customers see an error page.",
        ),
        (
            "Product pages slow to load in {region}",
            "p95 page load above 6 s for visitors in {region}; the CDN cache hit rate dropped.",
        ),
        ("Product images missing on the storefront", "Image URLs return 404 after the asset bucket was reorganised."),
        (
            "Basket contents lost after sign-in",
            "Anonymous baskets are not merged into the account basket when customers sign in.",
        ),
    ],
    "checkout": [
        (
            "Card payments failing at checkout",
            "Authorisations through {provider} fail with a timeout; orders cannot be completed.",
        ),
        ("Checkout latency above SLO", "The order confirmation step takes over 4 s at p95; abandonment is rising."),
        (
            "Duplicate order confirmations",
            "Some customers receive two confirmation e-mails and two charges for one order.",
        ),
        ("Discount codes rejected at checkout", "Valid promotion codes are refused with 'code expired'."),
    ],
    "mobile-api": [
        ("Mobile app cannot load order history", "GET /v2/orders returns 500 for accounts with more than 200 orders."),
        ("Elevated 5xx rate on the mobile API", "5xx responses above 2% on the mobile API gateway in {region}."),
        ("Push token registration failing", "New installs cannot register for push notifications."),
    ],
    "login-sso": [
        (
            "Users unable to sign in",
            "Sign-in returns 'something went wrong' for a share of users; sessions already open keep working.",
        ),
        (
            "SAML sign-in failing for business customers",
            "The identity provider certificate rotated; assertions from several tenants are rejected.",
        ),
        ("Password reset e-mails delayed", "Password reset messages arrive after 30 minutes or more."),
    ],
    "notifications": [
        (
            "Order confirmation e-mails delayed",
            "The e-mail queue holds more than 50,000 messages; confirmations arrive hours late.",
        ),
        ("SMS delivery failing in {region}", "{provider} rejects SMS for numbers in {region}."),
        (
            "Push notifications not delivered on Android",
            "The push provider returns authentication errors for Android devices.",
        ),
    ],
    "search": [
        (
            "Search returning no results",
            "Product search returns an empty list for most queries after the index rebuild.",
        ),
        ("Autocomplete slow", "Autocomplete suggestions take over 2 s; the search cluster's CPU is saturated."),
        ("Stale prices in search results", "Search shows yesterday's prices; the price update consumer is behind."),
    ],
    "primary-db": [
        ("Primary database CPU saturated", "CPU at 100% on the primary; queries for orders and accounts time out."),
        ("Replication lag on the read replicas", "Replicas are 15 minutes behind; account pages show stale data."),
        ("Database disk filling up", "The data volume on the primary is above 90% and growing by 2% an hour."),
    ],
    "message-queue": [
        (
            "Background jobs piling up",
            "More than 200,000 jobs waiting; order e-mails, exports and webhooks are delayed.",
        ),
        (
            "Message broker node down",
            "One of three broker nodes is unreachable; the cluster lost quorum for some queues.",
        ),
    ],
}
REGIONS = ["Europe", "North America", "Asia-Pacific", "South America"]
PROVIDERS = ["Adyen", "Stripe", "Twilio", "MessageBird"]

RESPONSE_NOTES = [
    "Paged the owning team; they are looking at the dashboards.",
    "Error rate started climbing right after the 14:02 deploy.",
    "Rolled back the latest deploy; watching the error rate.",
    "Scaled the service from 6 to 12 instances.",
    "Opened a ticket with the provider (case 48213).",
    "The provider confirms a partial outage on their side.",
    "Customer support reports a growing number of tickets about this.",
    "Failed over to the secondary region.",
    "Found a slow query introduced by yesterday's migration; adding an index.",
    "Cleared the stuck consumers; the queue is draining.",
    "Feature flag turned off for all customers.",
    "Graphs attached in the channel; latency back under the SLO at the edge.",
]
DISMISS_NOTES = [
    "False alarm: the synthetic check itself was failing, not the service.",
    "Planned maintenance that the alert did not know about.",
    "A single customer's misconfiguration; handed to support.",
]

# Target statuses by age (days since detection), with weights.
RECENT = [
    (Status.DETECTED, 2),
    (Status.TRIAGING, 2),
    (Status.RESPONDING, 3),
    (Status.MITIGATED, 2),
    (Status.RESOLVED, 1),
]
THIS_MONTH = [(Status.RESOLVED, 3), (Status.POSTMORTEM, 3), (Status.CLOSED, 6), (Status.DISMISSED, 1)]
OLDER = [(Status.CLOSED, 14), (Status.DISMISSED, 1), (Status.RESOLVED, 1)]


@dataclass
class Plan:
    detected_at: object
    severity: Severity
    services: list
    title: str
    summary: str
    target: str
    started_before: timedelta | None = None
    recurrence_of: Incident | None = None
    duplicate_of: Incident | None = None
    reopen: bool = False
    handover: bool = False


class Command(BaseCommand):
    help = "Create demo users, services and about four months of incidents (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=42, help="Random seed (default 42): same seed, same story.")
        parser.add_argument("--incidents", type=int, default=120, help="About how many incidents (default 120).")

    def handle(self, *args, seed, incidents, **options):
        self.rng = random.Random(seed)
        self.now = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
        with transaction.atomic():
            admin_created = self._admin()
            self.people = self._people()
            self.services = self._services()
            if Incident.objects.exists():
                made = 0
                self.stdout.write(f"Incidents are already there ({Incident.objects.count()}); no demo incidents added.")
            else:
                made = self._incidents(incidents)
                self.stdout.write(self.style.SUCCESS(f"Created {made} demo incidents over the last {DAYS} days."))
        if admin_created:
            self.stdout.write(
                self.style.SUCCESS(f"Superuser created. Log in at /admin/ as {ADMIN_USERNAME} / {ADMIN_PASSWORD}")
            )
        else:
            self.stdout.write(f"Superuser {ADMIN_USERNAME} already exists; its password was left as it is.")
        names = ", ".join(username for username, *_ in PEOPLE)
        self.stdout.write(f"Demo staff users ({names}) have the password {DEMO_PASSWORD} unless changed since.")

    # People, groups, services -------------------------------------------------------------

    def _admin(self):
        User = get_user_model()
        if User.objects.filter(username=ADMIN_USERNAME).exists():
            return False
        User.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", ADMIN_PASSWORD)
        return True

    def _people(self):
        User = get_user_model()
        hashed = None
        people = {}
        for username, first, last, group_name in PEOPLE:
            user = User.objects.filter(username=username).first()
            if user is None:
                hashed = hashed or make_password(DEMO_PASSWORD)  # hashing is slow; one hash serves all
                user = User.objects.create(
                    username=username,
                    first_name=first,
                    last_name=last,
                    email=f"{username}@example.com",
                    is_staff=True,
                    password=hashed,
                )
            user.groups.add(Group.objects.get(name=group_name))
            people.setdefault(group_name, []).append(user)
        return people

    def _services(self):
        services = {}
        for group_name, position, members in SERVICES:
            group, _ = ServiceGroup.objects.get_or_create(name=group_name, defaults={"position": position})
            for name, slug, public, team, description in members:
                service, _ = Service.objects.get_or_create(
                    slug=slug,
                    defaults=dict(
                        name=name,
                        is_public=public,
                        owning_team=team,
                        description=description,
                        group=group,
                        contact=f"#team-{team.lower()}",
                    ),
                )
                services[slug] = service
        return services

    # Incidents ------------------------------------------------------------------------------

    def _incidents(self, count):
        rng = self.rng
        severities = {s.level: s for s in Severity.objects.all()}
        # Detection times spread over the period, a few more in the last days; declared oldest first
        # so that the numbers follow the calendar.
        ages = sorted((rng.uniform(0.05, DAYS) for _ in range(count - 12)), reverse=True)
        ages += [rng.uniform(0.02, 0.9) for _ in range(12)]  # what is going on today
        ages.sort(reverse=True)
        plans = [self._plan(age, severities) for age in ages]
        self._special_cases(plans)
        made = {}
        for plan in sorted(plans, key=lambda p: p.detected_at):
            made[id(plan)] = incident = self._play(plan, made)
            plan.incident = incident
        demo_accounts(services=self.services, people=self.people)
        demo_steps_run("after_incidents", people=self.people, services=self.services, now=self.now)
        return len(made)

    def _plan(self, age_days, severities):
        rng = self.rng
        slug = rng.choice(list(PROBLEMS))
        title, summary = rng.choice(PROBLEMS[slug])
        fill = {"region": rng.choice(REGIONS), "provider": rng.choice(PROVIDERS)}
        services = [self.services[slug]]
        if rng.random() < 0.3:
            services.append(self.services[rng.choice([s for s in self.services if s != slug])])
        if age_days < 1:
            table = RECENT
        elif age_days < 30:
            table = THIS_MONTH
        else:
            table = OLDER
        target = rng.choices([s for s, _ in table], weights=[w for _, w in table])[0]
        level = rng.choices([1, 2, 3, 4], weights=[1, 3, 5, 3])[0]
        return Plan(
            detected_at=(self.now - timedelta(days=age_days)).replace(microsecond=0),
            severity=severities[level],
            services=services,
            title=title.format(**fill),
            summary=summary.format(**fill),
            target=target,
            started_before=timedelta(minutes=rng.randint(2, 90)) if rng.random() < 0.4 else None,
            handover=level <= 2 and rng.random() < 0.3,
        )

    def _special_cases(self, plans):
        """Make sure the story has a duplicate, a reopened incident, a recurrence and every status."""
        rng = self.rng
        old = [p for p in plans if p.target == Status.CLOSED and (self.now - p.detected_at).days > 40]
        # A duplicate: a second report of the same problem a few minutes later, dismissed.
        original = old[0]
        plans.append(
            Plan(
                detected_at=original.detected_at + timedelta(minutes=7),
                severity=original.severity,
                services=original.services,
                title=original.title + " (reported by support)",
                summary="Customer support opened this from tickets before they saw the existing incident.",
                target=Status.DISMISSED,
                duplicate_of=original,
            )
        )
        # A reopened incident: resolved too early, came back, then closed.
        reopened = old[len(old) // 2]
        reopened.reopen = True
        # A recurrence: the same problem again, weeks later, linked to the first one.
        first = old[1]
        weeks_later = first.detected_at + timedelta(days=20)
        later = [p for p in plans if p.target == Status.CLOSED and p.detected_at > weeks_later]
        repeat = later[len(later) // 2]
        repeat.title, repeat.summary, repeat.services = first.title, first.summary, first.services
        repeat.recurrence_of = first
        # Every status at least once.
        recent = [p for p in plans if (self.now - p.detected_at) < timedelta(days=1)]
        recent.sort(key=lambda p: p.detected_at)
        today = [Status.RESPONDING, Status.MITIGATED, Status.TRIAGING, Status.DETECTED]
        for plan, status in zip(recent, today, strict=False):
            plan.target = status
        month = [p for p in plans if timedelta(days=3) < (self.now - p.detected_at) < timedelta(days=30)]
        for plan, status in zip(month, [Status.POSTMORTEM, Status.RESOLVED, Status.CLOSED], strict=False):
            plan.target = status
            if status == Status.POSTMORTEM:
                plan.severity = Severity.objects.get(level=rng.choice([1, 2]))

    def _play(self, plan, made):
        """Declare one incident and work it to its target status, each step backdated."""
        rng = self.rng
        responders, comms = self.people["Responders"], self.people["Communications"]
        sev = plan.severity.level
        # The whole story must fit between detection and now: compress it for today's incidents.
        # Each step takes between half and all of its drawn duration; at most 7 notes are spaced by "note".
        room = self.now - plan.detected_at
        steps = self._durations(plan)
        longest = sum(steps.values(), timedelta()) + 6 * steps["note"]
        scale = min(1.0, room / longest * 0.95)
        clock = [plan.detected_at]

        def after(key):
            clock[0] += steps[key] * scale * rng.uniform(0.5, 1.0)
            return clock[0].replace(microsecond=0)

        declared_by = None if rng.random() < 0.5 else rng.choice(responders)  # monitoring or a person
        recurrence_of = made.get(id(plan.recurrence_of)) if plan.recurrence_of else None
        incident = svc.incident_declare(
            title=plan.title,
            summary=plan.summary,
            severity=plan.severity,
            actor=declared_by,
            services=plan.services,
            detected_at=plan.detected_at,
            recurrence_of=recurrence_of,
            started_at=plan.detected_at - plan.started_before if plan.started_before else None,
        )
        if plan.target == Status.DETECTED:
            return incident

        commander = rng.choice(responders)
        at = after("ack")
        incident = svc.incident_acknowledge(incident=incident, actor=commander, at=at)
        svc.role_assign(incident=incident, role=Role.COMMANDER, user=commander, actor=commander, at=at)

        if plan.target == Status.DISMISSED:
            at = after("triage")
            if plan.duplicate_of is not None:
                original = made[id(plan.duplicate_of)]
                svc.timeline_note_add(
                    incident=incident,
                    actor=commander,
                    occurred_at=at,
                    body=f"Same problem as {original.reference}; closing this one as a duplicate.",
                )
                return svc.incident_transition(
                    incident=incident,
                    to=Status.DISMISSED,
                    actor=commander,
                    at=at,
                    duplicate_of=original,
                    note=f"Duplicate of {original.reference}.",
                )
            note = rng.choice(DISMISS_NOTES)
            return svc.incident_transition(incident=incident, to=Status.DISMISSED, actor=commander, at=at, note=note)
        if plan.target == Status.TRIAGING:
            body = rng.choice(RESPONSE_NOTES)
            svc.timeline_note_add(incident=incident, actor=commander, occurred_at=after("note"), body=body)
            return incident

        at = after("triage")
        if rng.random() < 0.25:
            new_level = max(1, min(4, sev + rng.choice([-1, 1])))
            new = Severity.objects.get(level=new_level)
            wider = "wider" if new_level < sev else "smaller"
            incident = svc.incident_severity_change(
                incident=incident, severity=new, actor=commander, at=at, note=f"Impact is {wider} than first thought."
            )
            sev = new_level
        incident = svc.incident_transition(incident=incident, to=Status.RESPONDING, actor=commander, at=at)
        tech_lead = rng.choice([u for u in responders if u != commander])
        svc.role_assign(incident=incident, role=Role.TECHNICAL_LEAD, user=tech_lead, actor=commander, at=at)
        if sev <= 2:
            comms_lead = rng.choice(comms)
            svc.role_assign(incident=incident, role=Role.COMMUNICATIONS_LEAD, user=comms_lead, actor=commander, at=at)
        if sev == 1:
            scribe = rng.choice([u for u in responders if u not in (commander, tech_lead)])
            svc.role_assign(incident=incident, role=Role.SCRIBE, user=scribe, actor=commander, at=at)
        if rng.random() < 0.4:
            for expert in rng.sample([u for u in responders if u != commander], k=rng.randint(1, 2)):
                svc.role_assign(incident=incident, role=Role.EXPERT, user=expert, actor=commander, at=at)
        for body in rng.sample(RESPONSE_NOTES, k=rng.randint(1, 3)):
            author = rng.choice([commander, tech_lead])
            svc.timeline_note_add(incident=incident, actor=author, occurred_at=after("note"), body=body)
        if plan.handover:
            successor = rng.choice([u for u in responders if u != commander])
            at = after("note")
            svc.role_assign(incident=incident, role=Role.COMMANDER, user=successor, actor=commander, at=at)
            svc.timeline_note_add(
                incident=incident,
                actor=commander,
                occurred_at=at,
                body=f"End of my shift: handing command to {successor.get_full_name()}.",
            )
            commander = successor
        if plan.target == Status.RESPONDING:
            return incident

        incident = svc.incident_transition(
            incident=incident,
            to=Status.MITIGATED,
            actor=commander,
            at=after("mitigate"),
            note="Impact has stopped; monitoring before calling it resolved.",
        )
        if plan.target == Status.MITIGATED:
            return incident
        incident = svc.incident_transition(incident=incident, to=Status.RESOLVED, actor=commander, at=after("resolve"))
        if plan.reopen:
            incident = svc.incident_transition(
                incident=incident,
                to=Status.RESPONDING,
                actor=commander,
                at=after("note"),
                note="The errors are back: reopening.",
            )
            svc.timeline_note_add(
                incident=incident,
                actor=tech_lead,
                occurred_at=after("note"),
                body="The first fix only covered one of the two regions; applying it to the second.",
            )
            for to, step in ((Status.MITIGATED, "note"), (Status.RESOLVED, "resolve")):
                incident = svc.incident_transition(incident=incident, to=to, actor=commander, at=after(step))
        if plan.target == Status.RESOLVED:
            return incident
        if plan.severity.review_required or plan.target == Status.POSTMORTEM:
            incident = svc.incident_transition(
                incident=incident,
                to=Status.POSTMORTEM,
                actor=commander,
                at=after("review"),
                note="Post-incident review scheduled.",
            )
            if plan.target == Status.POSTMORTEM:
                return incident
        demo_steps_run("before_close", incident=incident, author=commander, responders=responders, at=clock[0])
        note = "Review done; closing." if incident.status == Status.POSTMORTEM else "No review needed; closing."
        at = after("close")
        return svc.incident_transition(incident=incident, to=Status.CLOSED, actor=commander, at=at, note=note)

    def _durations(self, plan):
        rng = self.rng
        sev = plan.severity.level
        minutes = lambda lo, hi: timedelta(minutes=rng.uniform(lo, hi))  # noqa: E731
        return {
            "ack": minutes(1, plan.severity.ack_target_minutes * 1.3),
            "triage": minutes(3, 25),
            "note": minutes(5, 40),
            "mitigate": minutes(15, 60 * (2 + sev)),
            "resolve": minutes(20, 60 * 24),
            "review": minutes(60 * 24, 60 * 24 * 5),
            "close": minutes(60 * 24 * 2, 60 * 24 * 10),
        }
