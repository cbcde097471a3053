"""Cost of the restricted-incident filter (issue 7): the incident lists for users without and with the
global permission, in the same run, and the plan of the main list query; results into docs/benchmarks.md.

Called by bench/restricted/run.sh once gunicorn is up (it sets the environment); not meant to be run alone:

    .venv/bin/python bench/restricted/measure.py --base-url http://127.0.0.1:8767 [--duration 15s] [--runs 2]

Users (created or reused here; all staff in the Responders group, none a superuser):
  (a)  bench-restricted-outsider: no global permission, holds a few roles (expert on 4 incidents, 2 of
       them restricted) and is an explicit member of one more restricted incident, so both EXISTS
       subqueries of Incident.objects.visible_to() are in the query and sometimes true;
  (a′) bench-user-050 from bench/generate.py: no global permission, a busy responder of the generated
       history (thousands of role assignments), the heavy end of the same case;
  (b)  bench-restricted-global: the Responders group plus incidents.view_restricted_incident, so
       visible_to() adds no condition.
Endpoints: the API incident list /api/v1/incidents/?page_size=50 (bearer API key of each user) and the
admin incident list /admin/incidents/incident/ (session of each user; list_per_page 50). After a
pre-check (200, and the outsider sees no restricted incident it may not see) and the query counts
(CaptureQueriesContext around a test-client request after a warm-up request), each URL gets a warm-up,
then `wrk -t2 -c8 -d15s --latency --timeout 30s` twice, interleaved across the six. The main list query
(the LIMITed SELECT from incidents_incident) of every user is EXPLAIN (ANALYZE, BUFFERS)ed warm.
"""

import json
import os
import re
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402  (needs ROOT on the path)
from bench.measure import machine  # noqa: E402

PROG = "bench/restricted/measure.py"
RESULTS = common.RESULTS
SECTION = "## Restricted incidents: list cost for a user without the global permission (issue 7)"
OUTSIDER, HEAVY, GLOBAL = "bench-restricted-outsider", "bench-user-050", "bench-restricted-global"
KEY_NAME = "bench restricted"
STATUS_PATH = "/api/v1/incidents/?page_size=50&status=closed"
LIMIT = 1.25
SERIAL_REQUESTS = 15
ms = common.ms

USERS = {
    "a": {"label": "(a) outsider, few roles", "username": OUTSIDER},
    "heavy": {"label": "(a′) busy responder, no permission", "username": HEAVY},
    "b": {"label": "(b) global permission", "username": GLOBAL},
}
ENDPOINTS = {
    "api": {"label": "API incident list", "path": "/api/v1/incidents/?page_size=50"},
    "admin": {"label": "admin incident list", "path": "/admin/incidents/incident/"},
}


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8767")
    parser.add_argument("--render-from", help="only rewrite the docs section from bench/results/<file>.json")
    common.add_run_options(parser, command="bench/restricted/run.sh")
    return parser.parse_args()


def prepare_users():
    """The three users (see the module docstring); idempotent."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.db import transaction

    from incidents.models import Incident, IncidentMember, RoleAssignment

    User = get_user_model()
    responders = Group.objects.get(name="Responders")
    users = {}
    with transaction.atomic():
        for key, username in (("a", OUTSIDER), ("b", GLOBAL)):
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True, "email": f"{username}@example.com"}
            )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            user.groups.set([responders])
            users[key] = user
        permission = Permission.objects.get(content_type__app_label="incidents", codename="view_restricted_incident")
        users["b"].user_permissions.set([permission])
        users["a"].user_permissions.clear()
        heavy = User.objects.filter(username=HEAVY).first()
        if heavy is None:
            sys.exit(f"{PROG}: {HEAVY} is missing; run bench/generate.py.")
        if heavy.is_superuser or not heavy.is_staff or not heavy.groups.filter(pk=responders.pk).exists():
            sys.exit(f"{PROG}: {HEAVY} should be a staff Responder and not a superuser.")
        if heavy.has_perm("incidents.view_restricted_incident"):
            sys.exit(f"{PROG}: {HEAVY} holds the global permission; (a′) must not.")
        users["heavy"] = heavy

        # The outsider's few roles: expert on the two newest restricted and the two newest open incidents of
        # the generated data (deterministic), and member of the third-newest restricted one (re-added on every
        # run: --mark-restricted replaces the members).
        outsider = users["a"]
        restricted = list(Incident.objects.filter(is_restricted=True).order_by("-detected_at", "-id")[:3])
        if len(restricted) < 3:
            sys.exit(f"{PROG}: fewer than 3 restricted incidents; run bench/generate.py --mark-restricted.")
        if not RoleAssignment.objects.filter(user=outsider).exists():
            unrestricted = list(Incident.objects.filter(is_restricted=False).open().order_by("-detected_at", "-id")[:2])
            for incident in restricted[:2] + unrestricted:
                RoleAssignment.objects.create(
                    incident=incident, role="expert", user=outsider, assigned_at=incident.detected_at
                )
        IncidentMember.objects.get_or_create(incident=restricted[2], user=outsider)
    return users


def describe_users(users):
    from incidents.models import Incident, IncidentMember, RoleAssignment

    out = {}
    for key, user in users.items():
        roles = RoleAssignment.objects.filter(user=user)
        out[key] = {
            "username": user.username,
            "roles": roles.count(),
            "roles_on_restricted": roles.filter(incident__is_restricted=True).count(),
            "memberships": IncidentMember.objects.filter(user=user).count(),
            "visible_restricted": Incident.objects.visible_to(user).filter(is_restricted=True).count(),
            "global_permission": user.has_perm("incidents.view_restricted_incident"),
        }
    return out


def api_keys(users):
    from incidents.api.keys import api_key_create
    from incidents.models import ApiKey

    ApiKey.objects.filter(name__startswith=KEY_NAME).delete()
    return {key: api_key_create(name=f"{KEY_NAME} {key}", user=user)[1] for key, user in users.items()}


def session_cookies(users):
    from django.conf import settings
    from django.test import Client

    cookies = {}
    for key, user in users.items():
        client = Client()
        client.force_login(user)
        cookies[key] = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return cookies


def headers_for(endpoint, user_key, keys, cookies):
    if endpoint == "api":
        return {"Authorization": f"Bearer {keys[user_key]}", "Accept": "application/json"}
    return {"Cookie": cookies[user_key]}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url, headers):
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def precheck(base, keys, cookies, users):
    """Every URL answers 200; the API page of (a) holds only incidents (a) may see, (b)'s holds restricted ones."""
    from incidents.models import Incident

    found = {}
    for endpoint, spec in ENDPOINTS.items():
        for user_key in USERS:
            status, body = fetch(base + spec["path"], headers_for(endpoint, user_key, keys, cookies))
            if status != 200:
                sys.exit(f"{PROG}: {spec['path']} as {user_key} answered {status}: {body[:300]!r}")
            if endpoint == "api":
                ids = [row["id"] for row in json.loads(body)["results"]]
                if len(ids) != 50:
                    sys.exit(f"{PROG}: the API page as {user_key} has {len(ids)} rows, not 50")
                restricted = set(Incident.objects.filter(pk__in=ids, is_restricted=True).values_list("pk", flat=True))
                allowed = set(
                    Incident.objects.visible_to(users[user_key]).filter(pk__in=ids).values_list("pk", flat=True)
                )
                if set(ids) - allowed:
                    sys.exit(f"{PROG}: the API page as {user_key} shows incidents it may not see: {set(ids) - allowed}")
                found[user_key] = {"rows": len(ids), "restricted_on_page": len(restricted)}
            print(f"  pre-check {spec['path']} as {user_key}: 200, {len(body):,} bytes")
    if found["b"]["restricted_on_page"] == 0:
        print("  note: the first API page of (b) holds no restricted incident")
    return found


def main_list_query(queries):
    """The page itself: the SELECT of incident rows with ORDER BY … LIMIT (not the paginator's COUNT). The admin
    lists read the page's rows by an IN subquery that holds the ORDER BY … LIMIT (issue 15)."""
    for query in queries:
        sql = query["sql"]
        if re.match(r'SELECT (DISTINCT )?"incidents_incident"\."id"', sql) and re.search(
            r"ORDER BY .* LIMIT \d+(\)|$)", sql, re.DOTALL
        ):
            return sql
    return None


def count_query(queries):
    """The admin paginator's capped COUNT over the filtered incidents, if the request made one."""
    for query in queries:
        if query["sql"].startswith("SELECT COUNT(*)") and '"incidents_incident"' in query["sql"]:
            return query["sql"]
    return None


def capture(client, path, extra):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(path, **extra)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path, **extra)
    if response.status_code != 200:
        sys.exit(f"{PROG}: test client got {response.status_code} for {path}")
    return ctx.captured_queries


def explain(sql):
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        for _ in range(2):  # the second run is the warm one
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
    return plan


def query_counts(users, keys, host):
    from django.test import Client

    out = {}
    for endpoint, spec in ENDPOINTS.items():
        for user_key, user in users.items():
            client = Client()
            extra = {"HTTP_HOST": host}
            if endpoint == "api":
                extra["HTTP_AUTHORIZATION"] = f"Bearer {keys[user_key]}"
            else:
                client.force_login(user)
            queries = capture(client, spec["path"], extra)
            serial = []
            for _ in range(SERIAL_REQUESTS):
                started = time.perf_counter()
                client.get(spec["path"], **extra)
                serial.append((time.perf_counter() - started) * 1000)
            sql = main_list_query(queries)
            count_sql = count_query(queries)
            out[f"{endpoint}_{user_key}"] = {
                "queries": len(queries),
                "serial_ms": statistics.median(serial),
                "sql_ms": sum(float(q["time"]) * 1000 for q in queries),
                "main_sql": sql,
                "plan": explain(sql) if sql else "(no LIMITed incident query found)",
                "count_sql": count_sql,
                "count_plan": explain(count_sql) if count_sql else None,
                "all_sql": [q["sql"] for q in queries],
            }
    return out


def status_filtered(users, keys, host):
    """EXPLAIN only (no wrk): the API list filtered by status, where the (status, detected_at) index applies."""
    from django.test import Client

    out = {}
    for user_key in ("a", "heavy", "b"):
        queries = capture(Client(), STATUS_PATH, {"HTTP_HOST": host, "HTTP_AUTHORIZATION": f"Bearer {keys[user_key]}"})
        sql = main_list_query(queries)
        out[user_key] = {"sql": sql, "plan": explain(sql) if sql else "(no LIMITed incident query found)"}
    return out


def _sorts_candidates(plan):
    """Whether the page is found by sorting the candidates: a Sort between the LIMIT and the walk of the incidents.
    A Sort after that walk belongs to a per-row subquery (the service names); one above the LIMIT orders the rows
    of the page already found (the admin lists read the page's ids first, then sort those 50 rows)."""
    above_walk = plan.split(" on incidents_incident ")[0]
    return bool(re.search(r"\bSort\b", above_walk.rsplit("Limit  (", 1)[-1]))


def plan_facts(plan):
    """What the brief asks of the plan: the index walked, whether anything sorts, the subplans and their rows."""
    indexes = re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\w+) on incidents_incident\b", plan)
    execution = re.search(r"Execution Time: ([\d.]+) ms", plan)
    hashed = re.findall(r"hashed SubPlan \d+", plan)
    buffers = re.search(r"Buffers: shared hit=(\d+)(?: read=(\d+))?", plan)
    return {
        "incident_index": indexes[0] if indexes else None,
        "sort": _sorts_candidates(plan),
        "seq_scan_incident": "Seq Scan on incidents_incident" in plan,
        "hashed_subplans": len(hashed),
        "execution_ms": float(execution.group(1)) if execution else None,
        "buffers": int(buffers.group(1)) + int(buffers.group(2) or 0) if buffers else None,
    }


def main():
    args = parse_args()
    if args.render_from:
        publish(json.loads(Path(args.render_from).read_text()), args.docs)
        return
    common.setup_django("bench.settings", PROG)
    from incidents.models import Incident, IncidentMember

    base = args.base_url.rstrip("/")
    host = re.sub(r"^https?://", "", base).split(":")[0]
    users = prepare_users()
    keys = api_keys(users)
    cookies = session_cookies(users)
    meta = {
        **common.run_meta(args, machine()),
        "throttle": os.environ.get("API_THROTTLE_RATE", "(product default)"),
        "incidents": Incident.objects.count(),
        "restricted": Incident.objects.filter(is_restricted=True).count(),
        "members": IncidentMember.objects.count(),
        "users": describe_users(users),
    }
    print(f"dataset: {meta['incidents']:,} incidents, {meta['restricted']:,} restricted, {meta['members']:,} members")
    for key, info in meta["users"].items():
        print(f"  user {key}: {info}")
    meta["pages"] = precheck(base, keys, cookies, users)
    counts = query_counts(users, keys, host)
    for name, entry in counts.items():
        facts = plan_facts(entry["plan"])
        entry["facts"] = facts
        print(f"  {name}: {entry['queries']} queries ({entry['sql_ms']:.1f} ms SQL); main query plan {facts}")
        if entry["count_plan"]:
            entry["count_facts"] = plan_facts(entry["count_plan"])
            print(f"    paginator COUNT: {entry['count_facts']}")
    filtered = status_filtered(users, keys, host)
    for key, entry in filtered.items():
        entry["facts"] = plan_facts(entry["plan"])
        print(f"  {STATUS_PATH} as {key}: {entry['facts']}")

    names = [f"{endpoint}_{user_key}" for endpoint in ENDPOINTS for user_key in USERS]

    def target(name, run):
        endpoint, user_key = name.split("_", 1)
        headers = [f"{k}: {v}" for k, v in headers_for(endpoint, user_key, keys, cookies).items()]
        return {
            "url": base + ENDPOINTS[endpoint]["path"],
            "script": ROOT / "bench" / "wrk_report.lua",
            "headers": headers,
        }

    def line(run, name, r):
        return (
            f"  run {run + 1} {name:<12} {r['rps']:8.1f} req/s  p50 {ms(r['p50_us']):>8}  p99 {ms(r['p99_us']):>8}  "
            f"non-2xx/3xx {r['non_2xx_3xx']}  timeouts {r['errors_timeout']}"
        )

    runs = common.interleaved(args, names, prog=PROG, target=target, line=line)
    meta["load_after"] = f"load {os.getloadavg()[0]:.2f}"
    raw = {"meta": meta, "runs": runs, "queries": counts, "status_filtered": filtered}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"restricted-{meta['stamp']}.json"
    path.write_text(json.dumps(raw, indent=2, default=str))
    print(f"raw results: {path}")
    publish(raw, args.docs)


def ratios(runs, endpoint, slow):
    """Per run: (rps of b ÷ rps of slow, p50 of slow ÷ p50 of b); above 1 means `slow` is slower than (b)."""
    out = []
    for a, b in zip(runs[f"{endpoint}_{slow}"], runs[f"{endpoint}_b"], strict=True):
        out.append((b["rps"] / a["rps"], a["p50_us"] / b["p50_us"]))
    return out


def subplan_scans(plan):
    """Full reads of a table inside hashed SubPlans: [(table, rows, ms)] from the plan text."""
    found = []
    for match in re.finditer(
        r"(?:Seq Scan|Bitmap Heap Scan) on (incidents_\w+) \w+\s+\(cost=[^)]*\) \(actual time=[\d.]+\.\.([\d.]+) rows=(\d+)",
        plan,
    ):
        found.append((match.group(1), int(match.group(3)), float(match.group(2))))
    return found


def findings(meta, counts, filtered):
    """What the plans say about the extra cost of the users without the permission (derived, not written by hand)."""
    lines = []
    for endpoint, spec in ENDPOINTS.items():
        for key in ("a", "heavy"):
            name = f"{endpoint}_{key}"
            plan = counts[name]["plan"]
            facts = counts[name]["facts"]
            big = [(t, r, t_ms) for t, r, t_ms in subplan_scans(plan) if r >= 1000]
            where = (
                f"walks `{facts['incident_index']}` (no sort)"
                if facts["incident_index"] and not facts["sort"]
                else "does not walk the date index"
            )
            text = (
                f"- {spec['label']}, {USERS[key]['label']}: the page query {where}; "
                f"{facts['execution_ms']:.1f} ms, {facts['buffers']:,} buffers warm"
            )
            if big:
                reads = "; ".join(f"{rows:,} rows of `{table}` in {t_ms:.1f} ms" for table, rows, t_ms in big)
                text += f". Hashed SubPlans read whole sets per request: {reads}"
                if any(table == "incidents_incident" for table, _r, _t in big):
                    text += (
                        " (the EXISTS over `Incident.objects.visible_to(user)` in the SELECT list, "
                        "`recurrence_of_visible` / `duplicate_of_visible`: the planner builds a hash of every "
                        "incident the user may see, as it costs the subquery for 199,000 rows, not the 51 the LIMIT "
                        "reads)"
                    )
                if any(table == "incidents_roleassignment" for table, _r, _t in big):
                    text += (
                        " (all role assignments of the user, hashed once per subquery; with no index on "
                        "`(user_id, incident_id)` this reads a heap page per assignment)"
                    )
            lines.append(text + ".")
            count_facts = counts[name].get("count_facts")
            if count_facts:
                jit = re.search(r"Timing: .*Total ([\d.]+) ms", counts[name]["count_plan"])
                lines.append(
                    f"  The admin paginator's capped COUNT (10,001 rows; (b) reads the `pg_class` estimate instead) takes "
                    f"{count_facts['execution_ms']:.1f} ms"
                    + (f", of which {float(jit.group(1)):.1f} ms JIT compilation" if jit else "")
                    + "."
                )
    for key, entry in filtered.items():
        facts = entry["facts"]
        lines.append(
            f"- `{STATUS_PATH}` (EXPLAIN only), {USERS[key]['label']}: {facts['execution_ms']:.1f} ms, "
            f"{facts['buffers']:,} buffers, index `{facts['incident_index']}`{', with a sort' if facts['sort'] else ''}"
            + (" (the status filter makes the query `SELECT DISTINCT`)" if "DISTINCT" in (entry["sql"] or "") else "")
            + "."
        )
    return lines


def rps_cells(results):
    return " / ".join(f"{r['rps']:.0f}" for r in results)


def render(meta, runs, counts, filtered):
    users = meta["users"]
    lines = [
        SECTION,
        "",
        "How to reproduce: `bench/restricted/run.sh` from the repository root (about 4 minutes). It migrates the "
        "PostgreSQL database `incidents_bench` (filled by `bench/generate.py` if empty), marks the restricted share "
        "in place with `bench/generate.py --mark-restricted` (2% of the incidents, chosen by a hash of the id, with "
        "1–3 explicit members each; an UPDATE and ANALYZE, no regeneration), starts gunicorn, measures, and rewrites "
        "this section. Raw output: `bench/results/restricted-*.json` (not committed).",
        "",
        common.measured_line(meta),
        "",
        f"- Machine: {meta['machine']}, {meta['load_after']} at the end; wrk, gunicorn and PostgreSQL share these "
        "cores, and the machine is shared with other work: compare the ratios within a run, not absolute figures.",
        f"- Data: {meta['incidents']:,} incidents, {meta['restricted']:,} of them restricted "
        f"({meta['restricted'] / meta['incidents']:.2%}), {meta['members']:,} explicit members.",
        f"- Server: `{meta['gunicorn']}` (2 sync workers, DEBUG off, bench.settings). API throttle raised to "
        f"`API_THROTTLE_RATE={meta['throttle']}` for the run so that wrk measures the list, not 429s.",
        f"- Load: `{meta['wrk']}` per URL with the user's bearer API key (API) or session cookie (admin), after a "
        f"{meta['warmup']} warm-up per URL; {meta['runs']} runs, interleaved across the six URLs.",
        "- Users (all staff in the Responders group, none a superuser):",
    ]
    for key, spec in USERS.items():
        info = users[key]
        extra = (
            "holds `incidents.view_restricted_incident`, so `visible_to()` adds no condition"
            if info["global_permission"]
            else f"{info['roles']:,} role assignments ({info['roles_on_restricted']} on restricted incidents), "
            f"{info['memberships']} explicit memberships; sees {info['visible_restricted']:,} of the "
            f"{meta['restricted']:,} restricted incidents"
        )
        lines.append(f"  - {spec['label']}: `{info['username']}`, {extra}.")
    lines += [
        "",
        "| list | user | req/s (run 1 / run 2) | p50 | p99 | queries | one request alone | main query (warm EXPLAIN ANALYZE) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for endpoint, spec in ENDPOINTS.items():
        for key, uspec in USERS.items():
            name = f"{endpoint}_{key}"
            results = runs[name]
            bad = sum(r["non_2xx_3xx"] + r["errors_timeout"] + r["errors_status"] for r in results)
            flag = f" ⚠ {bad} errors" if bad else ""
            facts = counts[name]["facts"]
            lines.append(
                f"| {spec['label']} `{spec['path']}` | {uspec['label']} | "
                f"{rps_cells(results)}{flag} | "
                f"{' / '.join(ms(r['p50_us']) for r in results)} | {' / '.join(ms(r['p99_us']) for r in results)} | "
                f"{counts[name]['queries']} | {counts[name].get('serial_ms', float('nan')):.1f} ms | "
                f"{facts['execution_ms']:.2f} ms, {facts['buffers']} buffers, "
                f"`{facts['incident_index']}`{', sort' if facts['sort'] else ''} |"
            )
    lines += [
        "",
        f'"One request alone": median of {SERIAL_REQUESTS} test-client requests in the measuring process, one at a '
        "time (no network, no concurrency), after the query-count request.",
        "",
        f"Cost of the filter, per run (same run, limit {LIMIT}×; above 1 means the user without the permission is "
        "slower):",
        "",
        "| list | user | req/s of (b) ÷ req/s of the user | p50 of the user ÷ p50 of (b) | within 1.25× |",
        "|---|---|---|---|---|",
    ]
    verdicts = []
    for endpoint, spec in ENDPOINTS.items():
        for key in ("a", "heavy"):
            pairs = ratios(runs, endpoint, key)
            ok = all(max(pair) <= LIMIT for pair in pairs)
            verdicts.append(ok)
            lines.append(
                f"| {spec['label']} | {USERS[key]['label']} | {' / '.join(f'{t:.3f}×' for t, _ in pairs)} | "
                f"{' / '.join(f'{p:.3f}×' for _, p in pairs)} | {'yes' if ok else '**no**'} |"
            )
    lines += ["", "What the plans show (warm `EXPLAIN (ANALYZE, BUFFERS)`, plans below):", ""]
    lines += findings(meta, counts, filtered)
    for endpoint, spec in ENDPOINTS.items():
        for key in ("a",):  # (a′)'s plans are in the raw results; the findings above summarise them
            name = f"{endpoint}_{key}"
            lines += [
                "",
                f"**{spec['label']}, {USERS[key]['label']}**: main list query and its warm "
                "`EXPLAIN (ANALYZE, BUFFERS)`:",
                "",
                "```sql",
                counts[name]["main_sql"] or "",
                "```",
                "```",
                counts[name]["plan"],
                "```",
            ]
    for key in ("a",):
        name = f"admin_{key}"
        if counts[name].get("count_plan"):
            lines += [
                "",
                f"**admin incident list, {USERS[key]['label']}**: the admin paginator's capped COUNT (made only when "
                "the queryset is filtered; for (b) it reads `pg_class.reltuples` instead), warm "
                "`EXPLAIN (ANALYZE, BUFFERS)`:",
                "",
                "```sql",
                counts[name]["count_sql"],
                "```",
                "```",
                counts[name]["count_plan"],
                "```",
            ]
    for key, entry in list(filtered.items())[:1]:
        lines += [
            "",
            f"**API list filtered by status `{STATUS_PATH}`, {USERS[key]['label']}** (EXPLAIN only, not under load):",
            "",
            "```",
            entry["plan"],
            "```",
        ]
    lines += ["", f"Raw wrk output and every query: `bench/results/restricted-{meta['stamp']}.json`.", ""]
    return "\n".join(lines)


def publish(raw, docs):
    text = render(raw["meta"], raw["runs"], raw["queries"], raw["status_filtered"])
    common.write_section(docs, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
