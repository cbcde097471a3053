"""The one public page of direct outreach: a contact's one-click opt-out from incident e-mail."""

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from .services import OutreachError, outreach_unsubscribe


@csrf_exempt  # RFC 8058 one-click: mail clients POST without a session; the signed token is the credential
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token):
    if request.method == "GET":  # a link scanner's GET must not opt anyone out
        return render(request, "comms/outreach/unsubscribe.html", {"token": token})
    try:
        contact = outreach_unsubscribe(token=token)
    except OutreachError as error:
        return render(request, "comms/subscriptions/problem.html", {"message": str(error)}, status=400)
    if request.POST.get("List-Unsubscribe") == "One-Click":
        return HttpResponse("Unsubscribed.", content_type="text/plain")
    return render(request, "comms/outreach/unsubscribed.html", {"email": contact.email})
