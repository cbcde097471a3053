"""The REST API incident list against the bare DRF list (issue 14, goal 1), in the same run; into docs/benchmarks.md.

Called by bench/api/run.sh once gunicorn is up (it sets the environment); not meant to be run alone:

    .venv/bin/python bench/api/measure.py --base-url http://127.0.0.1:18390 [--duration 15s] [--runs 2]

Users (created or reused here, staff in the Responders group, not superusers):
  bench-api-responder: no "view all restricted incidents", expert on two restricted incidents, so the
      visibility rule's EXISTS subqueries are in every list query (the case of most API keys);
  bench-api-global: the same plus the global permission (the visibility rule adds nothing).
Goal: every product row at >= 0.5x the bare list's requests/s in the same round; at most 5 queries at
page_size 1, 50 and 100; the restricted-incident rule (responder vs global) within 1.25x.
"""

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from bench import common  # noqa: E402  (needs ROOT on the path)
from bench.measure import machine  # noqa: E402

PROG = "bench/api/measure.py"
SECTION = "## REST API incident list (issue 14)"
RESPONDER, GLOBAL = "bench-api-responder", "bench-api-global"
KEY_NAME = "bench api"
TARGET, RESTRICTED_LIMIT, MAX_QUERIES = 0.5, 1.25, 5
LIST = "/api/v1/incidents/"
ms = common.ms


def endpoints(service_slug):
    return {
        "bare": {"label": "bare DRF list (baseline, no auth)", "path": "/bench/baseline-drf/", "user": None},
        "list": {"label": "API list, no filter", "path": f"{LIST}?page_size=50", "user": "responder"},
        "open": {"label": "API list, open=true", "path": f"{LIST}?page_size=50&open=true", "user": "responder"},
        "sev1": {"label": "API list, severity=1", "path": f"{LIST}?page_size=50&severity=1", "user": "responder"},
        "service": {
            "label": f"API list, service={service_slug}",
            "path": f"{LIST}?page_size=50&service={service_slug}",
            "user": "responder",
        },
        "global": {"label": "API list, no filter, global permission", "path": f"{LIST}?page_size=50", "user": "global"},
        "not_modified": {
            "label": "API list, no filter, If-None-Match → 304",
            "path": f"{LIST}?page_size=50",
            "user": "responder",
            "etag": True,
        },
    }


def parse_args():
    parser = common.argument_parser(__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:18390")
    parser.add_argument("--render-from", help="only rewrite the docs section from bench/results/<file>.json")
    common.add_run_options(parser, command="bash bench/api/run.sh")
    return parser.parse_args()


def prepare_users():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.db import transaction

    from incidents.models import Incident, RoleAssignment

    User = get_user_model()
    responders = Group.objects.get(name="Responders")
    users = {}
    with transaction.atomic():
        for key, username in (("responder", RESPONDER), ("global", GLOBAL)):
            user, created = User.objects.get_or_create(
                username=username, defaults={"is_staff": True, "email": f"{username}@example.com"}
            )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            user.groups.set([responders])
            users[key] = user
        permission = Permission.objects.get(content_type__app_label="incidents", codename="view_restricted_incident")
        users["global"].user_permissions.set([permission])
        users["responder"].user_permissions.clear()
        if not RoleAssignment.objects.filter(user=users["responder"]).exists():
            for incident in Incident.objects.filter(is_restricted=True).order_by("-detected_at", "-id")[:2]:
                RoleAssignment.objects.create(
                    incident=incident, role="expert", user=users["responder"], assigned_at=incident.detected_at
                )
    return users


def api_keys(users):
    from incidents.api.keys import api_key_create
    from incidents.models import ApiKey

    ApiKey.objects.filter(name__startswith=KEY_NAME).delete()
    return {key: api_key_create(name=f"{KEY_NAME} {key}", user=user)[1] for key, user in users.items()}


def busiest_service():
    from django.db.models import Count

    from incidents.models import Service

    return Service.objects.annotate(n=Count("incidents")).order_by("-n").values_list("slug", flat=True).first()


def query_counts(keys, host, service_slug):
    """Queries per request for each filter at page_size 1, 50 and 100: cold (the key and permissions read
    too) and warm (the key trusted for API_KEY_CACHE_SECONDS), after the key's first use."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from incidents.api.keys import api_key_cache_clear

    client = Client(HTTP_HOST=host, HTTP_AUTHORIZATION=f"Bearer {keys['responder']}")
    client.get(LIST)
    out = {}
    for name, query in (
        ("none", ""),
        ("open", "&open=true"),
        ("sev1", "&severity=1"),
        ("service", f"&service={service_slug}"),
    ):
        for size in (1, 50, 100):
            path = f"{LIST}?page_size={size}{query}"
            for state in ("cold", "warm"):
                if state == "cold":
                    api_key_cache_clear()
                with CaptureQueriesContext(connection) as captured:
                    response = client.get(path)
                if response.status_code != 200:
                    sys.exit(f"{PROG}: {path} answered {response.status_code}: {response.content[:300]!r}")
                out[f"{name} {size} {state}"] = len(captured)
    return out


def current_etag(base, key, path):
    import urllib.request

    request = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.headers["ETag"]


def main():
    args = parse_args()
    if args.render_from:
        publish(json.loads(Path(args.render_from).read_text()), args.docs)
        return
    common.setup_django("bench.settings", PROG)
    from incidents.models import Incident

    base = args.base_url.rstrip("/")
    host = re.sub(r"^https?://", "", base).split(":")[0]
    users = prepare_users()
    keys = api_keys(users)
    service_slug = busiest_service()
    specs = endpoints(service_slug)
    meta = {
        **common.run_meta(args, machine()),
        "throttle": os.environ.get("API_THROTTLE_RATE", "(product default)"),
        "incidents": Incident.objects.count(),
        "restricted": Incident.objects.filter(is_restricted=True).count(),
        "endpoints": {name: {k: v for k, v in spec.items() if k != "etag"} for name, spec in specs.items()},
    }
    print(f"dataset: {meta['incidents']:,} incidents, {meta['restricted']:,} restricted; service {service_slug}")
    counts = query_counts(keys, host, service_slug)
    print("queries:", counts)
    etag = current_etag(base, keys["responder"], specs["not_modified"]["path"])

    def target(name, run):
        spec = specs[name]
        headers = [f"Authorization: Bearer {keys[spec['user']]}"] if spec["user"] else []
        if spec.get("etag"):
            headers.append(f"If-None-Match: {etag}")
        return {"url": base + spec["path"], "script": ROOT / "bench" / "wrk_report.lua", "headers": headers}

    def line(run, name, r):
        return (
            f"  run {run + 1} {name:<13} {r['rps']:8.1f} req/s  p50 {ms(r['p50_us']):>8}  p99 {ms(r['p99_us']):>8}  "
            f"non-2xx/3xx {r['non_2xx_3xx']}"
        )

    # The bare list runs before and after every product URL: on a shared machine whose load drifts within a
    # round, each URL is compared with the bare list measured next to it.
    products = [name for name in specs if name != "bare"]
    order = [f"bare{i}" for i in range(len(products) + 1)]
    names = [order[0]]
    for i, name in enumerate(products):
        names += [name, order[i + 1]]
    for name in order:
        specs[name] = specs["bare"]
    runs = common.interleaved(args, names, prog=PROG, target=target, line=line)
    runs["bare"] = [
        {**r, "rps": sum(runs[b][i]["rps"] for b in order) / len(order)} for i, r in enumerate(runs[order[0]])
    ]
    meta["neighbours"] = {name: (order[i], order[i + 1]) for i, name in enumerate(products)}
    meta["load_after"] = f"load {os.getloadavg()[0]:.2f}"
    raw = {"meta": meta, "runs": runs, "queries": counts}
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    path = common.RESULTS / f"api-{meta['stamp']}.json"
    path.write_text(json.dumps(raw, indent=2, default=str))
    print(f"raw results: {path}")
    publish(raw, args.docs)


def render(meta, runs, counts):
    rounds = len(runs["bare"])
    lines = [
        SECTION,
        "",
        "How to reproduce: `bash bench/api/run.sh` from the repository root (about 6 minutes; fills "
        "`incidents_bench` with `bench/generate.py` when empty). Raw output goes to `bench/results/`.",
        "",
        common.measured_line(meta),
        "",
        f"- Machine: {meta['machine']}, {meta['load_after']} at the end; wrk, gunicorn and PostgreSQL share these "
        "cores, and the machine is shared with other work: compare the ratios, which are taken round by round.",
        f"- Data: {meta['incidents']:,} incidents ({meta['restricted']:,} restricted). Server: `{meta['gunicorn']}`, "
        f"DEBUG off, API throttle {meta['throttle']}. Load: `{meta['wrk']}` per URL, {meta['warmup']} warm-up, "
        f"{rounds} rounds interleaved across the URLs.",
        "- Baseline: the bare DRF list of BENCHMARKS.md (`/bench/baseline-drf/`: ListAPIView, 13-field "
        "ModelSerializer with the severity through select_related, CursorPagination of 50, no authentication). "
        "It runs before and after every product URL in each round, and each URL's ratio is taken against the "
        "mean of the two bare runs next to it (the bare row shows the mean of all of them).",
        f"- Product: `/api/v1/incidents/?page_size=50` with the API key of `{RESPONDER}` (Responders group, no "
        "global permission, so the visibility rule is in the query), and of `bench-api-global` (the permission).",
        "",
        "| endpoint | " + " | ".join(f"req/s r{i + 1}" for i in range(rounds)) + " | p50 | vs bare (req/s) |",
        "|---|" + "---|" * (rounds + 2),
    ]
    worst = {}
    neighbours = meta["neighbours"]

    def bare_next_to(name, i):
        before, after = neighbours[name]
        return (runs[before][i]["rps"] + runs[after][i]["rps"]) / 2

    for name in ["bare", *neighbours]:
        results = runs[name]
        if name == "bare":
            ratios = [1.0] * len(results)
        else:
            ratios = [r["rps"] / bare_next_to(name, i) for i, r in enumerate(results)]
        worst[name] = min(ratios)
        rps = " | ".join(f"{r['rps']:.0f}" for r in results)
        p50 = ms(sorted(r["p50_us"] for r in results)[len(results) // 2])
        shown = "1×" if name == "bare" else " / ".join(f"{x:.2f}×" for x in ratios)
        lines.append(
            f"| {meta['endpoints'][name]['label']} (`{meta['endpoints'][name]['path']}`) | {rps} | {p50} | {shown} |"
        )
    product = [n for n in neighbours if n != "not_modified"]
    met = all(worst[n] >= TARGET for n in product)
    restricted = [
        (b["rps"] / bare_next_to("global", i)) / (a["rps"] / bare_next_to("list", i))
        for i, (a, b) in enumerate(zip(runs["list"], runs["global"], strict=True))
    ]
    lines += [
        "",
        f"- Goal ≥ {TARGET}× the bare list's requests/s in every round: **{'met' if met else 'NOT met'}** "
        f"(lowest: {min(worst[n] for n in product):.2f}×, {min(product, key=worst.get)}).",
        "- Restricted-incident rule (global permission ÷ responder, each against its neighbouring bare runs): "
        + " / ".join(f"{x:.2f}×" for x in restricted)
        + f" (limit {RESTRICTED_LIMIT}×: **{'met' if max(restricted) <= RESTRICTED_LIMIT else 'NOT met'}**).",
        f"- Queries per request (test client; cold = key and permissions read, warm = key trusted for "
        f"API_KEY_CACHE_SECONDS): max {max(counts.values())} (limit {MAX_QUERIES}); "
        + ", ".join(
            f"{f} {min(v for k, v in counts.items() if k.startswith(f + ' ') and k.endswith('warm'))}–"
            f"{max(v for k, v in counts.items() if k.startswith(f + ' ') and k.endswith('cold'))}"
            for f in ("none", "open", "sev1", "service")
        )
        + " at page_size 1, 50 and 100 alike.",
        "- What made it fast: the key, its user and their permissions are trusted per process for "
        "`API_KEY_CACHE_SECONDS` (3 queries fewer), services' slugs come as an array column of the page's own "
        "query, incident rows are written to JSON without DRF's per-field machinery (tested to equal it), the "
        "filter set's form class is built once, no filter set at all is built when no filter is asked for, and a "
        "filtered request builds only the filters it names. The commander's and the linked incidents' columns "
        "are scalar subqueries, not LEFT JOINs (PostgreSQL planned three more joins for longer than it read the "
        "page), and `service=` filters on the through table's service ids (slugs read once per process): the "
        "planner then knows how common the service is, and an unknown or rare slug no longer walks every incident. "
        "For a user without the global permission, the visibility rule's role-or-member test is one expression "
        "whose SQL (the same two EXISTS subqueries) is written once, not two querysets built and compiled per "
        "request (about 1 ms of Python less).",
    ]
    return "\n".join(lines) + "\n"


def publish(raw, docs):
    text = render(raw["meta"], raw["runs"], raw["queries"])
    common.write_section(docs, SECTION, text)
    print(text)


if __name__ == "__main__":
    main()
