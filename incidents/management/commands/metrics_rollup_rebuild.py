"""manage.py metrics_rollup_rebuild: recompute the daily metric roll-ups from the incidents, every day.

Needed once after migrating a database that already holds incidents (until then the metrics are computed
from the incidents directly), or after writing incidents without the services (bench/generate.py).
Safe while the application runs: each day is recomputed under the same lock the services take.
"""

from django.core.management.base import BaseCommand

from incidents.rollups import rollup_rebuild


class Command(BaseCommand):
    help = "Recompute the daily metric roll-ups from the incidents (every day) and mark them built."

    def handle(self, *args, **options):
        rollup_rebuild(log=lambda line: self.stdout.write(line))
        self.stdout.write(self.style.SUCCESS("Metric roll-ups rebuilt."))
