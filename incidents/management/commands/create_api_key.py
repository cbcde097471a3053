from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from incidents.api.keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key acting as USERNAME and print it. It is shown only this once."

    def add_arguments(self, parser):
        parser.add_argument("name", help="What will use the key, e.g. “Grafana prod”.")
        parser.add_argument("--user", required=True, help="The user the key acts as; their permissions apply.")

    def handle(self, *args, name, user, **options):
        try:
            owner = get_user_model().objects.get_by_natural_key(user)
        except get_user_model().DoesNotExist:
            raise CommandError(f"There is no user {user!r}.") from None
        if not owner.is_active:
            raise CommandError(f"User {user!r} is inactive: the key would not work.")
        api_key, raw_key = api_key_create(name=name, user=owner)
        self.stderr.write(
            f"Created API key {api_key.prefix} “{name}” acting as {user}. Store it now: it is not shown again."
        )
        self.stdout.write(raw_key)
