"""Public e-mail subscriptions (no login, no JavaScript): subscribe, confirm (double opt-in), unsubscribe.

URL names (namespace ``comms_subscriptions``, wired under ``/subscribe/``):
``comms_subscriptions:subscribe``, ``comms_subscriptions:confirm`` (token),
``comms_subscriptions:unsubscribe`` (token). Links in e-mails only ever show a page with a button
(GET never changes anything, so mail scanners that follow links do no harm); the button POSTs. The
unsubscribe URL also takes the RFC 8058 one-click POST that mail clients send for
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``: no login, no CSRF token.
"""

from django import forms
from django.conf import settings
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from incidents.models import Service, Severity
from incidents.ratelimit import rate_limit_hit, retry_after

from . import services


class SubscribeForm(forms.Form):
    email = forms.EmailField(label="E-mail address", max_length=254)
    services = forms.ModelMultipleChoiceField(
        queryset=Service.objects.filter(is_public=True).order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unticked to hear about every service.",
    )
    min_severity = forms.ModelChoiceField(
        queryset=Severity.objects.order_by("level"),
        required=False,
        empty_label="Every incident",
        label="Only incidents at least this severe",
    )


SUBSCRIBE_PERIOD = 3600


@require_http_methods(["GET", "POST"])
def subscribe(request):
    form = SubscribeForm(request.POST or None)
    if request.method == "POST" and rate_limit_hit(
        scope="subscribe",
        client=request.META.get("REMOTE_ADDR") or "unknown",
        limit=settings.COMMS_SUBSCRIBE_PER_ADDRESS_PER_HOUR,
        period=SUBSCRIBE_PERIOD,
    ):
        form.is_valid()  # the form comes back as filled in, with the reason on top
        form.add_error(None, "Too many subscription requests from your network: try again in an hour.")
        response = render(request, "comms/subscriptions/subscribe.html", {"form": form}, status=429)
        response["Retry-After"] = str(retry_after(SUBSCRIBE_PERIOD))
        return response
    if request.method == "POST" and form.is_valid():
        try:
            services.subscriber_subscribe(
                email=form.cleaned_data["email"],
                services=form.cleaned_data["services"],
                min_severity=form.cleaned_data["min_severity"],
            )
        except services.SubscriberError as error:
            form.add_error(None, str(error))
        else:
            # The same answer whether or not the address was already subscribed.
            return render(request, "comms/subscriptions/check_inbox.html", {"email": form.cleaned_data["email"]})
    return render(request, "comms/subscriptions/subscribe.html", {"form": form}, status=400 if form.errors else 200)


@csrf_exempt  # the signed token in the URL is the credential
@require_http_methods(["GET", "POST"])
def confirm(request, token):
    if request.method == "GET":
        return render(request, "comms/subscriptions/confirm.html", {"token": token})
    try:
        subscriber = services.subscriber_confirm(token=token)
    except services.SubscriberError as error:
        return render(request, "comms/subscriptions/problem.html", {"message": str(error)}, status=400)
    return render(request, "comms/subscriptions/confirmed.html", {"subscriber": subscriber})


@csrf_exempt  # RFC 8058 one-click: mail clients POST without a session or a CSRF token
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token):
    try:
        subscriber = services.subscriber_from_unsubscribe_token(token)
    except services.SubscriberError as error:
        return render(request, "comms/subscriptions/problem.html", {"message": str(error)}, status=400)
    if request.method == "GET":
        return render(request, "comms/subscriptions/unsubscribe.html", {"subscriber": subscriber, "token": token})
    services.subscriber_unsubscribe(subscriber=subscriber)
    if request.POST.get("List-Unsubscribe") == "One-Click":
        return HttpResponse("Unsubscribed.", content_type="text/plain")
    return render(request, "comms/subscriptions/unsubscribed.html", {"subscriber": subscriber})
