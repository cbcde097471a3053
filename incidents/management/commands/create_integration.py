from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from incidents.ingestion import integration_create
from incidents.models import Integration, Service


class Command(BaseCommand):
    help = (
        "Create an alert integration (alertmanager, grafana or pagerduty) and print its key. "
        "The key is shown only this once."
    )

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=Integration.Kind.values, help="The sender's format.")
        parser.add_argument("name", help="What sends here, e.g. “Alertmanager prod”.")
        parser.add_argument(
            "--service",
            action="append",
            default=[],
            metavar="SLUG",
            help="A service every incident from here affects (repeatable).",
        )
        parser.add_argument(
            "--open-mode",
            choices=Integration.OpenMode.values,
            default=Integration.OpenMode.TRIAGE,
            help="triage: incidents wait in Detected for a responder; respond: straight to Responding.",
        )
        parser.add_argument(
            "--resolve-to",
            choices=Integration.ResolveTo.values,
            default=Integration.ResolveTo.RESOLVED,
            help="Where an incident goes when all its alerts have resolved.",
        )
        parser.add_argument("--signing-secret", default="", help="Grafana only: the contact point's HMAC secret.")

    def handle(self, *args, kind, name, service, open_mode, resolve_to, signing_secret, **options):
        services = list(Service.objects.filter(slug__in=service))
        missing = sorted(set(service) - {s.slug for s in services})
        if missing:
            raise CommandError(f"No service with the slug {', '.join(missing)}.")
        if signing_secret and kind != Integration.Kind.GRAFANA:
            raise CommandError("Only Grafana integrations take a signing secret.")
        try:
            integration, key = integration_create(
                kind=kind,
                name=name,
                services=services,
                open_mode=open_mode,
                resolve_to=resolve_to,
                signing_secret=signing_secret,
            )
        except IntegrityError:
            raise CommandError(f"An integration named {name!r} exists already.") from None
        self.stderr.write(
            f"Created the {integration.get_kind_display()} integration “{name}” (key {integration.key_prefix}…). "
            "Store the key now: it is not shown again."
        )
        self.stdout.write(key)
