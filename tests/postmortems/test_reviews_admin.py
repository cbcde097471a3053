"""Post-incident reviews in the admin: start from an incident, write, name reviewers, approve, publish."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from incidents.models import Incident, TimelineEvent
from postmortems import services as review_services
from postmortems.admin import ReviewAdmin
from postmortems.models import Review, ReviewTemplate
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db
S = Incident.Status
LIST_URL = reverse("admin:postmortems_review_changelist")
ADD_URL = reverse("admin:postmortems_review_add")


def change_url(review):
    return reverse("admin:postmortems_review_change", args=[review.pk])


def step_url(review, step):
    return reverse(f"admin:postmortems_review_{step}", args=[review.pk])


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def posted_back(client, url, **changes):
    """What the review page posts when saved as it was rendered, with `changes` (name: value) applied."""
    response = client.get(url)
    assert response.status_code == 200
    forms = [response.context["adminform"].form]
    data = {}
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        management = formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = management[name].value()
        forms += list(formset.forms)
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            data[form.add_prefix(name)] = "on" if value is True else value
    data.update(changes)
    return data


@pytest.fixture
def team(db):
    return {
        "rita": UserFactory(username="rita", first_name="Rita", last_name="Moreno", groups=["Responders"]),
        "rob": UserFactory(username="rob.reviewer", groups=["Responders"]),
        "victor": UserFactory(username="victor", groups=["Viewers"]),
    }


@pytest.fixture
def incident(team):
    checkout = ServiceFactory(slug="checkout", name="Checkout API")
    t0 = timezone.now().replace(microsecond=0) - timedelta(hours=2)
    incident = declare(
        "Checkout returns 502s",
        severity=SeverityFactory(level=1),
        services=[checkout],
        summary="Card payments fail in Europe.",
        detected_at=t0,
    )
    return drive(incident, S.RESOLVED, actor=team["rita"], at=t0)


def test_start_review_from_an_incident_prefills_it(client, team, incident):
    client.force_login(team["rita"])
    page = client.get(ADD_URL, {"incident": incident.pk})
    assert page.status_code == 200
    assert page.context["adminform"].form["incident"].value() == str(incident.pk)

    response = client.post(f"{ADD_URL}?incident={incident.pk}", {"incident": incident.pk, "template": ""})
    review = Review.objects.get(incident=incident)
    assert response.status_code == 302 and response["Location"] == change_url(review)
    assert review.author == team["rita"] and "Card payments fail in Europe." in review.summary
    assert "Status responding → mitigated" in review.timeline
    assert TimelineEvent.objects.filter(incident=incident, kind="review", data__action="created").exists()

    # Starting it again lands on the existing review.
    again = client.get(ADD_URL, {"incident": incident.pk})
    assert again.status_code == 302 and again["Location"] == change_url(review)


def test_review_page_shows_sections_facts_knowledge_and_buttons(client, team, incident):
    earlier = declare("Checkout 502s after deploy", services=list(incident.services.all()), detected_at=incident.detected_at - timedelta(days=20))
    review = review_services.review_create(incident=incident, actor=team["rita"])
    client.force_login(team["rita"])
    body = client.get(change_url(review)).content.decode()
    for text in ("Root cause analysis", "What went well", "Time to resolve", "Submit for review", "Refresh facts"):
        assert text in body, text
    assert earlier.reference in body and "same service: Checkout API" in body
    assert "No section names a person." in body
    assert 'data-step="publish"' not in body  # not before it is submitted


def test_edit_sections_factors_and_reviewers_through_the_page(client, team, incident):
    review = review_services.review_create(incident=incident, actor=team["rita"])
    client.force_login(team["rita"])
    data = posted_back(
        client,
        change_url(review),
        root_cause="The connection pool was sized for last year's traffic.",
        **{
            "factors-0-category": "capacity",
            "factors-0-description": "Pool of 10 connections per instance.",
            "reviewers-0-user": team["rob"].pk,
        },
    )
    response = client.post(change_url(review), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    review.refresh_from_db()
    assert review.root_cause == "The connection pool was sized for last year's traffic."
    assert list(review.factors.values_list("category", "description")) == [
        ("capacity", "Pool of 10 connections per instance.")
    ]
    assert [r.user for r in review.reviewers.all()] == [team["rob"]]
    assert TimelineEvent.objects.filter(incident=incident, kind="review", data__action="reviewer_added").exists()


def test_naming_the_author_as_reviewer_is_a_message_not_an_error(client, team, incident):
    review = review_services.review_create(incident=incident, actor=team["rita"])
    client.force_login(team["rita"])
    data = posted_back(client, change_url(review), **{"reviewers-0-user": team["rita"].pk})
    response = client.post(change_url(review), data, follow=True)
    assert any("cannot also be its reviewer" in m for m in messages_of(response))
    assert not review.reviewers.exists()


def test_workflow_buttons_submit_approve_and_publish_with_blameless_confirmation(client, team, incident):
    review = review_services.review_create(incident=incident, actor=team["rita"], reviewers=[team["rob"]])
    review = review_services.review_update(review=review, actor=team["rita"], root_cause="Rita Moreno restarted the node.")
    client.force_login(team["rita"])
    page = client.get(change_url(review)).content.decode()
    assert "These sections name people" in page and "Rita Moreno" in page

    response = client.post(step_url(review, "submit"), follow=True)
    assert any("submitted for approval" in m for m in messages_of(response))
    response = client.post(step_url(review, "approve"), follow=True)  # the author is not a reviewer
    assert any("Only the named reviewers" in m for m in messages_of(response))

    client.force_login(team["rob"])
    response = client.post(step_url(review, "approve"), follow=True)
    assert any("You approved" in m for m in messages_of(response))

    confirm = client.get(step_url(review, "publish"))
    assert confirm.status_code == 200 and "This review names people" in confirm.content.decode()
    assert "Root cause analysis: “Rita Moreno”" in confirm.content.decode()
    refused = client.post(step_url(review, "publish"))
    assert refused.status_code == 200 and "This review names people" in refused.content.decode()
    assert Review.objects.get(pk=review.pk).status == Review.Status.IN_REVIEW

    response = client.post(step_url(review, "publish"), {"acknowledge_named_people": "yes"}, follow=True)
    assert any("published" in m for m in messages_of(response))
    review.refresh_from_db()
    assert review.status == Review.Status.PUBLISHED and review.published_by == team["rob"]
    # A published review is read-only on its page.
    page = client.get(change_url(review))
    assert "root_cause" not in page.context["adminform"].form.fields


def test_close_button_on_the_incident_says_why_it_is_refused(client, team, incident):
    client.force_login(team["rita"])
    url = reverse("admin:incidents_incident_transition", args=[incident.pk])
    assert b"Close" in client.post(url, {"to": "closed"}).content  # closing asks for confirmation first
    response = client.post(url, {"to": "closed", "confirmed": "yes"}, follow=True)
    assert any(
        f"{incident.reference} needs a published post-incident review before it can be closed" in m
        for m in messages_of(response)
    )
    assert Incident.objects.get(pk=incident.pk).status == S.RESOLVED


def test_knowledge_base_search_filters_and_restricted_reviews(client, team, incident):
    review = review_services.review_create(incident=incident, actor=team["rita"])
    review_services.review_update(review=review, actor=team["rita"], lessons_learned="Autoscaling lagged the spike.")
    secret = drive(declare("Payroll exposure", restricted=True), S.RESOLVED)
    hidden = review_services.review_create(incident=secret, actor=None)
    review_services.review_update(review=hidden, actor=None, lessons_learned="Autoscaling was fine here.")

    client.force_login(team["victor"])  # a viewer: reads reviews, sees no restricted incident
    def refs(params):
        response = client.get(LIST_URL, params)
        assert response.status_code == 200
        return {r.incident.reference for r in response.context["cl"].result_list}

    assert refs({}) == {incident.reference}
    assert refs({"q": "autoscaling"}) == {incident.reference}
    assert refs({"q": incident.reference}) == {incident.reference}
    assert refs({"q": secret.reference}) == set()
    assert refs({"status__exact": "published"}) == set()
    assert refs({"service": "checkout"}) == {incident.reference}
    assert client.get(change_url(hidden), follow=True).redirect_chain[-1][0] == reverse("admin:index")
    page = client.get(change_url(review)).content.decode()
    assert "Submit for review" not in page  # viewers read, they do not run the workflow
    assert client.post(step_url(review, "submit")).status_code == 403


def test_review_list_query_count_does_not_grow_with_rows(client, team, monkeypatch):
    client.force_login(team["rita"])
    for n in range(30):
        review_services.review_create(incident=drive(declare(f"Incident {n}"), S.RESOLVED), actor=team["rita"])

    def queries_at(per_page):
        monkeypatch.setattr(ReviewAdmin, "list_per_page", per_page)
        client.get(LIST_URL)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(LIST_URL)
        assert len(response.context["cl"].result_list) == per_page
        return len(ctx.captured_queries)

    assert queries_at(5) == queries_at(30)


def test_templates_are_edited_in_the_admin_with_one_default(admin_client):
    url = reverse("admin:postmortems_reviewtemplate_add")
    data = {"name": "Security incident", "is_default": "on", "root_cause": "Which control failed?"}
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "Only one template can be the default" in response.content.decode()
    del data["is_default"]
    assert admin_client.post(url, data).status_code == 302
    assert ReviewTemplate.objects.get(name="Security incident").root_cause == "Which control failed?"
