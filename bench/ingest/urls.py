"""The product's URLs plus /bench/ingest/bare/: the least an ingestion endpoint does, to compare against.

The bare endpoint reads the body and inserts it as one AlertPayload row (the first thing the real
endpoint does too), in autocommit, with no authentication, parsing or de-duplication.
"""

from django.http import JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from incidents.models import AlertPayload
from incidents_site.urls import urlpatterns as product_urlpatterns


@csrf_exempt
def bare(request):
    payload = AlertPayload.objects.create(kind="alertmanager", body=request.body.decode(), status="accepted")
    return JsonResponse({"status": "accepted", "payload": payload.pk})


urlpatterns = [path("bench/ingest/bare/", bare, name="bench-ingest-bare"), *product_urlpatterns]
