"""Fill a PostgreSQL database with a large, consistent incident history for benchmarks.

    .venv/bin/python bench/generate.py [--incidents 200000] [--events-per-incident 10] [--reset | --if-empty]
                                       [--restricted-share 0.02]
    .venv/bin/python bench/generate.py --mark-restricted [--restricted-share 0.02]

DATABASE_URL (default postgres://postgres@127.0.0.1:5432/incidents_bench) names the database; it is
created and migrated if needed. The script refuses anything but PostgreSQL, refuses a database whose
name does not contain "bench" (unless --any-database), and refuses a database that already holds
incidents (unless --reset, which empties the incident tables first, or --if-empty, which then does
nothing).

The rows are written with COPY (about a minute for 200,000 incidents and 2,000,000 timeline events
on two cores), bypassing the services on purpose: they are built to satisfy every CHECK and unique
constraint the models declare (timestamps consistent with each status, one active holder per role,
the commander column equal to the active commander role), the reference counter is moved past the
last number so incidents declared later continue the numbering, and the tables are analysed.

Restricted incidents (issue 7): a deterministic share of the incidents (--restricted-share, 2% by
default; chosen by a hash of the id, so the same ids on every run and every database) is marked
restricted, and each of them gets one to three explicit members among the bench users. Generation
does this at the end; --mark-restricted does only this on a database that already holds incidents
(an UPDATE of is_restricted on all rows, the members replaced, then ANALYZE), so older bench data
need not be regenerated. No timeline rows are written for it (the generated history stays as it was).
"""

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/incidents_bench"

MINUTE, HOUR, DAY = 60, 3600, 86400
SPAN_DAYS = 3 * 365  # the history covers three years
USERS = 120
SERVICE_GROUPS = {
    "Customer-facing": ["Storefront", "Checkout", "Mobile API", "Web app", "Partner API", "Status page"],
    "Payments": ["Card payments", "Invoicing", "Refunds", "Fraud checks", "Payouts"],
    "Accounts": ["Login and SSO", "Sign-up", "Profile", "Permissions", "Billing portal"],
    "Messaging": ["E-mail delivery", "SMS", "Push notifications", "Webhooks", "Chat"],
    "Data": ["Search", "Recommendations", "Reporting", "Data warehouse", "Exports"],
    "Infrastructure": [
        "Primary database",
        "Read replicas",
        "Message queue",
        "Cache",
        "Kubernetes",
        "CDN",
        "DNS",
        "Object storage",
        "Load balancers",
        "CI/CD",
    ],
}
PROBLEMS = [
    "Elevated 5xx rate on {s}",
    "{s} latency above SLO",
    "{s} unavailable in {r}",
    "{s} returning stale data",
    "Partial outage of {s}",
    "{s} degraded after deploy",
    "Intermittent timeouts in {s}",
    "{s} error budget burning fast",
    "{s} queue backlog growing",
    "Certificate expiry on {s}",
    "{s} failing health checks in {r}",
    "Memory leak in {s}",
    "{s} rejecting valid requests",
    "Spike of customer tickets about {s}",
    "{s} dependency failing in {r}",
]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1", "sa-east-1"]
SUMMARIES = [
    "Customers in {r} see errors; the on-call engineer was paged by the SLO alert.",
    "Monitoring shows a sustained rise in errors since the last deploy.",
    "Support reports several tickets; impact is being assessed.",
    "A dependency is degraded; requests are retried and slow.",
    "Synthetic checks fail from two of five probe locations.",
]
NOTES = [
    "Paged the owning team; looking at the dashboards.",
    "Rolled back the latest deploy.",
    "Scaled out from 6 to 12 instances.",
    "Opened a ticket with the provider.",
    "Provider confirms a partial outage on their side.",
    "Failed over to the secondary region.",
    "Error rate back to normal at the edge; watching.",
    "Found a slow query; adding an index.",
    "Cleared the stuck consumers; the queue is draining.",
    "Feature flag turned off for everyone.",
    "Customer support has a macro for affected customers.",
    "Next update in 30 minutes.",
]
DISMISS_NOTES = ["False alarm: the probe itself failed.", "Planned maintenance.", "Duplicate report."]

# Open incidents are about 2%: most among the newest tenth, a few forgotten older ones.
OPEN_SPLIT = [("detected", 20), ("triaging", 25), ("responding", 35), ("mitigated", 20)]
ENDED_SPLIT = [("closed", 91), ("dismissed", 4), ("resolved", 2.5), ("postmortem", 2.5)]
LIFECYCLE = ("detected", "triaging", "responding", "mitigated", "resolved", "postmortem", "closed")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=200_000)
    parser.add_argument("--events-per-incident", type=int, default=10, help="average timeline rows per incident")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--reset", action="store_true", help="empty the incident tables first")
    parser.add_argument("--if-empty", action="store_true", help="do nothing (and succeed) if there are incidents")
    parser.add_argument("--any-database", action="store_true", help="allow a database name without 'bench'")
    parser.add_argument("--chunk", type=int, default=10_000, help="incidents per COPY batch")
    parser.add_argument(
        "--restricted-share",
        type=float,
        default=0.02,
        help="share of incidents marked restricted, chosen by a hash of the id (0 for none)",
    )
    parser.add_argument(
        "--mark-restricted",
        action="store_true",
        help="only (re)mark the restricted share and its members on the existing incidents, then ANALYZE",
    )
    args = parser.parse_args()
    if not 0 <= args.restricted_share <= 1:
        parser.error("--restricted-share must be between 0 and 1")
    return args


def setup_django(any_database=False):
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "incidents_site.settings")
    import environ

    config = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    if "postgresql" not in config["ENGINE"]:
        sys.exit(f"bench/generate.py: refusing to run on {config['ENGINE']}: the benchmark data is for PostgreSQL.")
    if "bench" not in config["NAME"] and not any_database:
        sys.exit(
            f"bench/generate.py: refusing to fill database {config['NAME']!r}: its name does not contain 'bench' "
            "(use --any-database if you mean it)."
        )
    create_database(config)
    import django

    django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":  # settings may override DATABASE_URL
        sys.exit(f"bench/generate.py: refusing to run on {connection.vendor}: the benchmark data is for PostgreSQL.")
    return connection


def create_database(config):
    import psycopg

    params = dict(
        dbname="postgres",
        host=config.get("HOST") or None,
        port=config.get("PORT") or None,
        user=config.get("USER") or None,
        password=config.get("PASSWORD") or None,
    )
    with psycopg.connect(**{k: v for k, v in params.items() if v}, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]).fetchone()
        if not exists:
            print(f"creating database {config['NAME']}")
            conn.execute(f'CREATE DATABASE "{config["NAME"]}"')


class Tables:
    """Names and columns from the models, so a renamed table shows up as an error here, not bad data."""

    def __init__(self):
        from incidents.models import Incident, IncidentMember, RoleAssignment, TimelineEvent

        self.incident = Incident._meta.db_table
        self.member = IncidentMember._meta.db_table
        self.links = Incident.services.through._meta.db_table
        self.role = RoleAssignment._meta.db_table
        self.event = TimelineEvent._meta.db_table
        self.big = (self.incident, self.links, self.role, self.event)


INCIDENT_COLUMNS = (
    "id",
    "number",
    "title",
    "summary",
    "severity_id",
    "status",
    "started_at",
    "detected_at",
    "acknowledged_at",
    "mitigated_at",
    "resolved_at",
    "closed_at",
    "recurrence_of_id",
    "duplicate_of_id",
    "commander_id",
    "created_at",
    "updated_at",
    "last_activity_at",
    "version",
    "is_restricted",  # all false here; mark_restricted() sets the share after the load
    "public_title",  # empty: the status page makes a neutral name from the public services
    "public_impact",
)
LINK_COLUMNS = ("id", "incident_id", "service_id")
ROLE_COLUMNS = ("id", "incident_id", "role", "user_id", "assigned_at", "relieved_at", "assigned_by_id")
EVENT_COLUMNS = ("id", "incident_id", "kind", "occurred_at", "recorded_at", "actor_id", "body", "data")


def ts(epoch):
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S+00") if epoch is not None else "\\N"


def nullable(value):
    return "\\N" if value is None else str(value)


class Generator:
    def __init__(self, *, rng, incidents, events_per_incident, users, usernames, services, severities, first_number):
        self.rng = rng
        self.count = incidents
        self.events_target = events_per_incident
        self.users = users
        self.usernames = usernames
        self.services = services
        self.severities = severities  # level -> id
        self.first_number = first_number
        self.now = int(time.time()) - 10 * MINUTE
        self.start = self.now - SPAN_DAYS * DAY
        self.next_link = self.next_role = self.next_event = 1
        self.status_of = {}

    def chunk(self, first_id, last_id):
        """Rows for incidents first_id..last_id as COPY text, one string per table."""
        incidents, links, roles, events = [], [], [], []
        for incident_id in range(first_id, last_id + 1):
            self.one(incident_id, incidents, links, roles, events)
        return "".join(incidents), "".join(links), "".join(roles), "".join(events)

    def one(self, iid, incidents, links, roles, events):
        rng = self.rng
        n = self.count
        position = iid / n  # 0 = oldest, 1 = newest
        detected = self.start + int(position * SPAN_DAYS * DAY) + rng.randint(0, 300)
        detected = min(detected, self.now - 5 * MINUTE)
        open_chance = 0.15 if position > 0.9 else 0.0055
        if rng.random() < open_chance:
            status = rng.choices([s for s, _ in OPEN_SPLIT], [w for _, w in OPEN_SPLIT])[0]
        else:
            status = rng.choices([s for s, _ in ENDED_SPLIT], [w for _, w in ENDED_SPLIT])[0]
        level = rng.choices((1, 2, 3, 4), (5, 15, 45, 35))[0]
        service_ids = rng.sample(self.services, k=rng.choice((1, 1, 1, 2, 2, 3)))
        region = rng.choice(REGIONS)
        title = rng.choice(PROBLEMS).format(s=service_ids[0][1], r=region)
        summary = rng.choice(SUMMARIES).format(r=region)
        started = detected - rng.randint(MINUTE, 2 * HOUR) if rng.random() < 0.4 else None

        # Offsets from detection for each step; compressed for recent incidents so nothing is in the future.
        ack = rng.randint(MINUTE, 30 * MINUTE)
        respond = ack + rng.randint(2 * MINUTE, 20 * MINUTE)
        mitigate = respond + rng.randint(10 * MINUTE, 6 * HOUR)
        resolve = mitigate + rng.randint(10 * MINUTE, DAY)
        review = resolve + rng.randint(DAY, 5 * DAY)
        close = (review if level <= 2 else resolve) + rng.randint(DAY, 10 * DAY)
        dismiss = ack + rng.randint(5 * MINUTE, HOUR)
        offsets = {
            "detected": 0,
            "triaging": ack,
            "responding": respond,
            "mitigated": mitigate,
            "resolved": resolve,
            "postmortem": review,
            "closed": close,
            "dismissed": dismiss,
        }
        # A recent incident has not got as far as planned yet: it stays at the last step reached by now.
        room = self.now - detected
        if offsets[status] > room:
            path = ("detected", "triaging", "dismissed") if status == "dismissed" else LIFECYCLE
            reached = [s for s in path[: path.index(status) + 1] if offsets[s] <= room]
            status = reached[-1]

        def at(offset):
            return detected + offset

        acknowledged = at(ack) if status != "detected" else None
        mitigated = at(mitigate) if status in ("mitigated", "resolved", "postmortem", "closed") else None
        resolved = at(resolve) if status in ("resolved", "postmortem", "closed") else None
        closed = at(close) if status == "closed" else at(dismiss) if status == "dismissed" else None
        recurrence = rng.randint(max(1, iid - 5000), iid - 1) if iid > 1 and rng.random() < 0.03 else None
        duplicate = (
            rng.randint(max(1, iid - 50), iid - 1) if status == "dismissed" and iid > 1 and rng.random() < 0.3 else None
        )

        # People: the commander takes it on at acknowledgement; some hand over.
        users = self.users
        actor = rng.choice(users) if rng.random() < 0.5 else None
        commander = rng.choice(users) if acknowledged else None
        ev = []  # (time, kind, actor, body, data)
        ev.append(
            (
                detected,
                "declared",
                actor,
                title,
                {
                    "severity": level,
                    "services": sorted(slug for _, _, slug in service_ids),
                    "started_at": iso(started),
                    "recurrence_of": f"INC-{self.first_number + recurrence - 1}" if recurrence else None,
                },
            )
        )
        role_rows = []
        final_commander = None
        if acknowledged:
            ev.append((acknowledged, "acknowledged", commander, "", {"acknowledged_at": iso(acknowledged)}))
            role_rows.append(["commander", commander, acknowledged, None])
            ev.append(
                (
                    acknowledged,
                    "role_assigned",
                    commander,
                    "",
                    {"role": "commander", "from": None, "to": self.usernames[commander]},
                )
            )
            ev.append((acknowledged, "status_changed", commander, "", transition("detected", "triaging")))
            final_commander = commander
            path = ["triaging"]
            if status == "dismissed":
                ev.append(
                    (
                        closed,
                        "status_changed",
                        commander,
                        rng.choice(DISMISS_NOTES),
                        transition(
                            "triaging", "dismissed", duplicate=duplicate and f"INC-{self.first_number + duplicate - 1}"
                        ),
                    )
                )
            elif status != "triaging":
                steps = [("responding", at(respond)), ("mitigated", mitigated), ("resolved", resolved)]
                if level <= 2 or status == "postmortem":
                    steps.append(("postmortem", at(review) if status in ("postmortem", "closed") else None))
                steps.append(("closed", closed))
                for to, when in steps:
                    if when is None:
                        break
                    ev.append((when, "status_changed", commander, "", transition(path[-1], to)))
                    path.append(to)
                    if to == status:
                        break
                responding_at = at(respond)
                tech = rng.choice(users)
                role_rows.append(["technical_lead", tech, responding_at, None])
                ev.append(
                    (
                        responding_at,
                        "role_assigned",
                        commander,
                        "",
                        {"role": "technical_lead", "from": None, "to": self.usernames[tech]},
                    )
                )
                if level <= 2:
                    comms = rng.choice(users)
                    role_rows.append(["communications_lead", comms, responding_at, None])
                    ev.append(
                        (
                            responding_at,
                            "role_assigned",
                            commander,
                            "",
                            {"role": "communications_lead", "from": None, "to": self.usernames[comms]},
                        )
                    )
                if level == 1:
                    role_rows.append(["scribe", rng.choice(users), responding_at, None])
                if rng.random() < 0.2:
                    role_rows.append(["expert", rng.choice(users), responding_at, None])
                if rng.random() < 0.1:  # a handover of command
                    end = max(mitigated or (self.now - 60), responding_at)
                    when = responding_at + (end - responding_at) // 2
                    successor = rng.choice([u for u in users[:8] if u != commander])
                    role_rows[0][3] = when
                    role_rows.append(["commander", successor, when, None])
                    ev.append(
                        (
                            when,
                            "role_assigned",
                            commander,
                            "",
                            {"role": "commander", "from": self.usernames[commander], "to": self.usernames[successor]},
                        )
                    )
                    final_commander = successor
        latest = max(e[0] for e in ev)
        if status in ("detected", "triaging", "responding", "mitigated"):  # still being worked on
            latest = max(latest, min(self.now, detected + 6 * HOUR))
        notes = max(1 if acknowledged else 0, self.events_target - len(ev))
        for _ in range(notes):
            when = rng.randint(detected, latest)
            ev.append((when, "note", rng.choice((commander, actor)) if commander else None, rng.choice(NOTES), {}))

        last_activity = max(e[0] for e in ev)
        stamp = ts(detected)
        incidents.append(
            "\t".join(
                (
                    str(iid),
                    str(self.first_number + iid - 1),
                    title,
                    summary,
                    str(self.severities[level]),
                    status,
                    ts(started),
                    stamp,
                    ts(acknowledged),
                    ts(mitigated),
                    ts(resolved),
                    ts(closed),
                    nullable(recurrence),
                    nullable(duplicate),
                    nullable(final_commander),
                    stamp,
                    ts(last_activity),
                    ts(last_activity),
                    str(len(ev) - notes + 1),
                    "f",
                    "",
                    "",
                )
            )
            + "\n"
        )
        for service_id, _, _ in service_ids:
            links.append(f"{self.next_link}\t{iid}\t{service_id}\n")
            self.next_link += 1
        for role, user, assigned, relieved in role_rows:
            roles.append(
                f"{self.next_role}\t{iid}\t{role}\t{user}\t{ts(assigned)}\t{ts(relieved)}\t{nullable(commander)}\n"
            )
            self.next_role += 1
        ev.sort(key=lambda e: e[0])
        for when, kind, who, body, data in ev:
            stamp = ts(when)
            events.append(
                f"{self.next_event}\t{iid}\t{kind}\t{stamp}\t{stamp}\t{nullable(who)}\t{body}\t{json.dumps(data)}\n"
            )
            self.next_event += 1


def iso(epoch):
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch is not None else None


def transition(frm, to, duplicate=None):
    data = {"from": frm, "to": to, "reopened": False, "timestamps": {}}
    if duplicate:
        data["duplicate_of"] = duplicate
    return data


def prepare_reference_data(rng):
    """Users and services, through the ORM (they are few), reused when they already exist."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from incidents.models import Service, ServiceGroup, Severity

    User = get_user_model()
    responders = Group.objects.get(name="Responders")
    existing = set(User.objects.filter(username__startswith="bench-user-").values_list("username", flat=True))
    new = [
        User(
            username=f"bench-user-{i:03d}",
            first_name=f"Responder{i:03d}",
            last_name="Bench",
            email=f"bench-user-{i:03d}@example.com",
            is_staff=True,
            password="!",
        )  # no usable password
        for i in range(1, USERS + 1)
        if f"bench-user-{i:03d}" not in existing
    ]
    User.objects.bulk_create(new)
    users = list(User.objects.filter(username__startswith="bench-user-").order_by("id").values_list("id", "username"))
    responders.user_set.add(*(uid for uid, _ in users))

    services = []
    for position, (group_name, names) in enumerate(SERVICE_GROUPS.items(), start=1):
        group, _ = ServiceGroup.objects.get_or_create(name=group_name, defaults={"position": position})
        for name in names:
            slug = name.lower().replace(" and ", "-").replace("/", "-").replace(" ", "-")
            service, _ = Service.objects.get_or_create(
                slug=slug,
                defaults=dict(
                    name=name,
                    group=group,
                    is_public=group_name != "Infrastructure",
                    owning_team=f"Team {group_name}",
                    description=f"{name} ({group_name}).",
                ),
            )
            services.append((service.id, service.name, service.slug))
    severities = dict(Severity.objects.values_list("level", "id"))
    if set(severities) != {1, 2, 3, 4}:
        sys.exit("bench/generate.py: the four seeded severity levels are missing; run the migrations.")
    return users, services, severities


def main():
    args = parse_args()
    connection = setup_django(args.any_database)
    from django.core.management import call_command
    from django.db import transaction

    name = connection.settings_dict["NAME"]
    started = time.monotonic()
    call_command("migrate", interactive=False, verbosity=0)
    tables = Tables()
    from incidents.models import Incident, ReferenceCounter
    from incidents.services import FIRST_INCIDENT_NUMBER

    if args.mark_restricted:
        mark_restricted_only(connection, args.restricted_share)
        return
    existing = Incident.objects.count()
    if existing and args.if_empty and not args.reset:
        print(f"{name} already holds {existing:,} incidents; keeping them (use --reset to regenerate).")
        return
    if existing and not args.reset:
        sys.exit(f"bench/generate.py: {name} already holds {existing} incidents; pass --reset to replace them.")

    rng = random.Random(args.seed)
    users, services, severities = prepare_reference_data(rng)
    gen = Generator(
        rng=rng,
        incidents=args.incidents,
        events_per_incident=args.events_per_incident,
        users=[uid for uid, _ in users],
        usernames=dict(users),
        services=services,
        severities=severities,
        first_number=FIRST_INCIDENT_NUMBER,
    )
    print(f"generating {args.incidents} incidents into {name} ...", flush=True)
    with transaction.atomic(), connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor, for COPY
        # Emptying in this transaction lets COPY FREEZE write rows already frozen and visible to all.
        cursor.execute(f"TRUNCATE {', '.join(tables.big)} RESTART IDENTITY CASCADE")
        try:
            with transaction.atomic():
                cursor.execute("SET LOCAL session_replication_role = replica")  # skip FK triggers: rows are consistent
        except Exception:  # not a superuser: foreign keys are checked row by row, slower but fine
            print("  (cannot skip foreign-key triggers without superuser; loading with them)")
        indexes = drop_secondary_indexes(cursor, tables.big)
        copied = {t: 0 for t in tables.big}
        for first in range(1, args.incidents + 1, args.chunk):
            last = min(first + args.chunk - 1, args.incidents)
            texts = gen.chunk(first, last)
            for table, columns, text in zip(
                (tables.incident, tables.links, tables.role, tables.event),
                (INCIDENT_COLUMNS, LINK_COLUMNS, ROLE_COLUMNS, EVENT_COLUMNS),
                texts,
                strict=True,
            ):
                with raw.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FREEZE)") as copy:
                    copy.write(text)
                copied[table] += text.count("\n")
            print(f"  {last:>9} incidents  {time.monotonic() - started:6.1f} s", flush=True)
        print(f"  recreating {len(indexes)} indexes ...", flush=True)
        for statement in indexes:
            cursor.execute(statement)
        for table in tables.big:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
        ReferenceCounter.objects.update_or_create(
            name="incident", defaults={"last_value": FIRST_INCIDENT_NUMBER + args.incidents - 1}
        )
        restricted, members = mark_restricted(cursor, args.restricted_share)
        print(f"  {restricted:,} incidents restricted, {members:,} explicit members", flush=True)
        rollup_forget()
    print("  vacuum analyze ...", flush=True)
    with connection.cursor() as cursor:
        for table in (*tables.big, tables.member):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    verify(connection, tables)
    rollup_rebuild_logged(connection)
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{copied[t]:,} {t}" for t in tables.big)
    print(f"done in {elapsed:.0f} s: {summary}")
    open_count = Incident.objects.open().count()
    print(f"open incidents: {open_count:,}; next incident number: {FIRST_INCIDENT_NUMBER + args.incidents}")


CHECKS = {
    "timeline rows without an incident": "SELECT count(*) FROM {event} e WHERE NOT EXISTS (SELECT 1 FROM {incident} i WHERE i.id = e.incident_id)",
    "role rows without an incident or user": "SELECT count(*) FROM {role} r WHERE NOT EXISTS (SELECT 1 FROM {incident} i WHERE i.id = r.incident_id)"
    " OR NOT EXISTS (SELECT 1 FROM auth_user u WHERE u.id = r.user_id)",
    "incidents whose commander is not the active commander role": "SELECT count(*) FROM {incident} i LEFT JOIN {role} r ON r.incident_id = i.id AND r.role = 'commander'"
    " AND r.relieved_at IS NULL WHERE i.commander_id IS DISTINCT FROM r.user_id",
    "incidents whose last activity is not their latest timeline row": "SELECT count(*) FROM {incident} i JOIN (SELECT incident_id, max(occurred_at) AS latest FROM {event}"
    " GROUP BY incident_id) e ON e.incident_id = i.id WHERE i.last_activity_at <> e.latest",
    "timeline rows in the future": "SELECT count(*) FROM {event} WHERE occurred_at > now()",
}


def verify(connection, tables):
    """What CHECK constraints cannot say (foreign-key triggers were off during the load)."""
    names = {"event": tables.event, "incident": tables.incident, "role": tables.role}
    with connection.cursor() as cursor:
        for label, sql in CHECKS.items():
            cursor.execute(sql.format(**names))
            bad = cursor.fetchone()[0]
            if bad:
                sys.exit(f"bench/generate.py: {bad} {label}: the generator is wrong, please fix it.")
    print(f"  verified: {', '.join(f'no {label}' for label in CHECKS)}")


# Restricted incidents are those whose id hashes (first 32 bits of md5 of the decimal id) below the share,
# in SQL so that generation and --mark-restricted on an existing database pick the same ids.
RESTRICTED_HASH = "mod(('x' || lpad(substr(md5({id}::text), 1, 8), 16, '0'))::bit(64)::bigint, 1000000)"
MEMBER_HASH = "('x' || lpad(substr(md5({id}::text || ':member'), 1, 8), 16, '0'))::bit(64)::bigint"


def mark_restricted(cursor, share):
    """Mark the restricted share (is_restricted on every row, so a new share replaces an old one) and give
    each restricted incident 1 to 3 explicit members among the bench users; returns (restricted, members)."""
    from incidents.models import Incident, IncidentMember

    incident = Incident._meta.db_table
    member = IncidentMember._meta.db_table
    threshold = round(share * 1_000_000)
    restricted = RESTRICTED_HASH.format(id="id") + f" < {threshold}"
    cursor.execute(f"UPDATE {incident} SET is_restricted = ({restricted}) WHERE is_restricted <> ({restricted})")
    cursor.execute(f"TRUNCATE {member} RESTART IDENTITY")
    # Member k (0..2) of incident i: the bench user at position (hash(i) + 37k) mod the number of bench
    # users; incidents get 1, 2 or 3 members (k < 1 + hash(i) % 3). Role holders see the incident anyway.
    cursor.execute(
        f"""
        WITH users AS (
            SELECT id, row_number() OVER (ORDER BY id) - 1 AS position, count(*) OVER () AS total
            FROM auth_user WHERE left(username, 11) = 'bench-user-'
        ),
        restricted AS (
            SELECT id, detected_at, {MEMBER_HASH.format(id="id")} AS h FROM {incident} WHERE is_restricted
        )
        INSERT INTO {member} (incident_id, user_id, added_at, added_by_id)
        SELECT DISTINCT ON (r.id, u.id) r.id, u.id, r.detected_at + interval '10 minutes', NULL
        FROM restricted r
        CROSS JOIN generate_series(0, 2) AS k
        JOIN users u ON u.position = mod(r.h + 37 * k, u.total)
        WHERE k < 1 + mod(r.h, 3)
        """
    )
    cursor.execute(f"SELECT count(*) FROM {incident} WHERE is_restricted")
    count = cursor.fetchone()[0]
    cursor.execute(f"SELECT count(*) FROM {member}")
    members = cursor.fetchone()[0]
    return count, members


def mark_restricted_only(connection, share):
    """--mark-restricted: on the incidents already there, in place, then ANALYZE and the roll-ups rebuilt."""
    from django.db import transaction

    from incidents.models import Incident, IncidentMember

    started = time.monotonic()
    if not Incident.objects.exists():
        sys.exit("bench/generate.py: no incidents to mark; generate them first.")
    with transaction.atomic(), connection.cursor() as cursor:
        restricted, members = mark_restricted(cursor, share)
        rollup_forget()
    with connection.cursor() as cursor:
        for table in (Incident._meta.db_table, IncidentMember._meta.db_table):
            cursor.execute(f"ANALYZE {table}")
    total = Incident.objects.count()
    print(
        f"marked {restricted:,} of {total:,} incidents restricted ({restricted / total:.2%}), {members:,} explicit "
        f"members, analysed, in {time.monotonic() - started:.1f} s"
    )
    rollup_rebuild_logged(connection)


def rollup_forget():
    """In the load's transaction: the metric roll-ups (issue 14) no longer hold these incidents, which were
    written past the services, so drop them and the mark that they are built; until the rebuild below
    commits, the metrics are computed from the incidents directly (never from a stale roll-up)."""
    from incidents.rollup_models import MetricsRollup, MetricsRollupDay, MetricsRollupState
    from incidents.rollups import rollup_tables_exist

    if rollup_tables_exist():
        MetricsRollupState.objects.all().delete()
        MetricsRollup.objects.all().delete()
        MetricsRollupDay.objects.all().delete()


def rollup_rebuild_logged(connection):
    """Roll every day up again from the incidents just written (manage.py metrics_rollup_rebuild), then
    ANALYZE the roll-up table, so the database leaves here with the roll-up built and consistent."""
    from incidents.rollup_models import MetricsRollup
    from incidents.rollups import rollup_rebuild, rollup_tables_exist

    if not rollup_tables_exist():
        return
    started = time.monotonic()
    print("  metric roll-ups ...", flush=True)
    rollup_rebuild()
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {MetricsRollup._meta.db_table}")
    print(f"  metric roll-ups rebuilt in {time.monotonic() - started:.0f} s", flush=True)


def drop_secondary_indexes(cursor, tables):
    """Drop indexes that back no constraint (they are rebuilt after the load, much faster than row by row)."""
    cursor.execute(
        """
        SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid
        LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid
        WHERE t.relname = ANY(%s) AND c.oid IS NULL
        """,
        [list(tables)],
    )
    rows = cursor.fetchall()
    for index_name, _ in rows:
        cursor.execute(f"DROP INDEX {index_name}")
    return [definition for _, definition in rows]


if __name__ == "__main__":
    main()
