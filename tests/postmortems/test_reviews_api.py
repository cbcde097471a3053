"""/api/v1/postmortems/: the knowledge base, and the review workflow for tools."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from incidents import services as incident_services
from incidents.models import Incident, TimelineEvent
from postmortems import services as review_services
from postmortems.models import Review
from tests.api import api_client_for as client_for
from tests.incidents.factories import ServiceFactory, SeverityFactory, UserFactory, declare, drive

pytestmark = pytest.mark.django_db
S = Incident.Status
LIST = "/api/v1/postmortems/"


@pytest.fixture(autouse=True)
def _fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def detail(review):
    return f"{LIST}{review.pk}/"


def assert_error(response, status_code, code=None):
    assert response.status_code == status_code, response.content
    error = response.json()["error"]
    assert set(error) == {"code", "message", "fields"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error


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
    return drive(
        declare("Checkout returns 502s", severity=SeverityFactory(level=1), services=[checkout], summary="Cards fail."),
        S.RESOLVED,
        actor=team["rita"],
    )


def test_create_review_for_an_incident_prefilled(team, incident):
    api = client_for(team["rita"])
    response = api.post(LIST, {"incident": incident.reference, "reviewers": ["rob.reviewer"]}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    review = Review.objects.get(incident=incident)
    assert response["Location"].endswith(detail(review))
    assert body["incident"] == incident.reference and body["status"] == "draft" and body["author"] == "rita"
    assert body["severity"] == 1 and body["review_required"] is True and body["services"] == ["checkout"]
    assert body["summary"].startswith("Cards fail.") and "Time to resolve" in body["facts"]
    assert [r["user"] for r in body["reviewers"]] == ["rob.reviewer"]
    assert body["template"] == "Standard post-incident review"
    # Once per incident: asking again returns the same review.
    again = api.post(LIST, {"incident": incident.reference}, format="json")
    assert again.status_code == 200 and again.json()["id"] == review.pk


def test_viewers_read_but_cannot_write(team, incident):
    review = review_services.review_create(incident=incident, actor=team["rita"])
    viewer = client_for(team["victor"])
    assert viewer.get(detail(review)).status_code == 200
    assert_error(viewer.post(LIST, {"incident": incident.reference}, format="json"), 403)
    assert_error(viewer.patch(detail(review), {"root_cause": "x"}, format="json"), 403)
    assert_error(viewer.post(f"{detail(review)}submit/", {}, format="json"), 403)


def test_workflow_through_the_api(team, incident):
    api, reviewer = client_for(team["rita"]), client_for(team["rob"])
    review = review_services.review_create(incident=incident, actor=team["rita"])

    # Publishing a draft, or submitting without reviewers: 409 with the reason.
    assert "Submit the review" in assert_error(api.post(f"{detail(review)}publish/", {}, format="json"), 409)["message"]
    assert_error(api.post(f"{detail(review)}submit/", {}, format="json"), 409, "review_state")

    response = api.patch(
        detail(review),
        {
            "root_cause": "Rita restarted the primary during the backup window.",
            "reviewers": ["rob.reviewer"],
            "factors": [
                {"category": "process", "description": "No freeze during backups."},
                {"category": "monitoring_gap", "description": "Backup progress is not graphed."},
            ],
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["root_cause"].startswith("Rita restarted")
    assert [(f["category"], f["description"]) for f in body["factors"]] == [
        ("process", "No freeze during backups."),
        ("monitoring_gap", "Backup progress is not graphed."),
    ]
    assert body["people_named"] == [
        {"section": "root_cause", "section_label": "Root cause analysis", "text": "Rita", "users": ["rita"]}
    ]

    assert api.post(f"{detail(review)}submit/", {}, format="json").json()["status"] == "in_review"
    assert_error(api.post(f"{detail(review)}approve/", {}, format="json"), 400)  # not a named reviewer
    approved = reviewer.post(f"{detail(review)}approve/", {}, format="json").json()
    assert approved["reviewers"][0]["approved"] is True

    # Names in the text: publishing needs the acknowledgement.
    error = assert_error(api.post(f"{detail(review)}publish/", {}, format="json"), 409, "people_named")
    assert error["fields"]["people_named"] == ["Root cause analysis: Rita"]
    response = api.post(f"{detail(review)}publish/", {"acknowledge_named_people": True}, format="json")
    assert response.status_code == 200 and response.json()["status"] == "published"
    event = TimelineEvent.objects.filter(incident=incident, kind="review").latest("id")
    assert event.data["action"] == "published" and event.data["review_id"] == review.pk

    # Published: edits need a reopen first.
    assert_error(api.patch(detail(review), {"root_cause": "Changed"}, format="json"), 409, "review_state")
    reopened = api.post(f"{detail(review)}reopen/", {"reason": "Vendor sent their report"}, format="json").json()
    assert reopened["status"] == "draft" and reopened["published_at"] is None


def test_close_transition_is_a_409_with_the_reason(team, incident):
    api = client_for(team["rita"])
    error = assert_error(
        api.post(f"/api/v1/incidents/{incident.pk}/transition/", {"to": "closed"}, format="json"),
        409,
        "invalid_transition",
    )
    assert f"{incident.reference} needs a published post-incident review before it can be closed" in error["message"]
    assert "SEV1 requires one" in error["message"]
    assert Incident.objects.get(pk=incident.pk).status == S.RESOLVED


def test_search_and_filters(team, incident):
    api = client_for(team["victor"])
    published = review_services.review_create(incident=incident, actor=team["rita"], reviewers=[team["rob"]])
    published = review_services.review_update(
        review=published, actor=team["rita"], lessons_learned="Certificate rotation must be automated."
    )
    review_services.review_factor_add(
        review=published, actor=team["rita"], category="dependency", description="The CDN vendor changed its chain."
    )
    review_services.review_submit(review=published, actor=team["rita"])
    review_services.review_approve(review=published, actor=team["rob"])
    review_services.review_publish(review=published, actor=team["rita"])
    search_incident = drive(declare("Search slow", services=[ServiceFactory(slug="search")]), S.RESOLVED)
    draft = review_services.review_create(incident=search_incident, actor=team["rita"])

    def ids(params):
        response = api.get(LIST, params)
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    assert ids({}) == [draft.pk, published.pk]  # newest first
    assert ids({"search": "certificate rotation"}) == [published.pk]
    assert ids({"search": "cdn vendor"}) == [published.pk]
    assert ids({"search": incident.reference}) == [published.pk]
    assert ids({"search": "nothing like this"}) == []
    assert ids({"status": "published"}) == [published.pk]
    assert ids({"status": "draft,in_review"}) == [draft.pk]
    assert ids({"service": "search"}) == [draft.pk]
    assert ids({"severity": "1"}) == [published.pk]
    assert ids({"category": "dependency"}) == [published.pk]
    assert ids({"required": "true"}) == [published.pk]
    hour = timedelta(hours=1)
    assert ids({"published_after": (timezone.now() - hour).isoformat()}) == [published.pk]
    assert ids({"published_before": (timezone.now() - hour).isoformat()}) == []
    assert_error(api.get(LIST, {"severity": "high"}), 400)
    assert_error(api.get(LIST, {"status": "finished"}), 400)


def test_detail_has_similar_past_incidents_and_recurrence_links(team, incident):
    checkout = incident.services.get()
    earlier = declare(
        "Checkout 502s at peak", services=[checkout], detected_at=incident.detected_at - timedelta(days=40)
    )
    Incident.objects.filter(pk=incident.pk).update(recurrence_of=earlier)
    review = review_services.review_create(incident=Incident.objects.get(pk=incident.pk), actor=team["rita"])
    body = client_for(team["victor"]).get(detail(review)).json()
    assert body["recurrence_of"] == earlier.reference and body["recurrences"] == []
    similar = body["similar_incidents"][0]
    assert similar["reference"] == earlier.reference
    assert similar["reasons"] == ["same service: Checkout API", "similar title: 502s, checkout"]
    assert similar["url"].endswith(f"/api/v1/incidents/{earlier.pk}/")


def test_restricted_incident_reviews_are_404_and_unlisted(team):
    secret = drive(declare("Payroll exposure", restricted=True), S.RESOLVED)
    review = review_services.review_create(incident=secret, actor=None)
    outsider = client_for(team["rita"])
    assert_error(outsider.get(detail(review)), 404)
    assert_error(outsider.patch(detail(review), {"root_cause": "x"}, format="json"), 404)
    assert_error(outsider.post(f"{detail(review)}submit/", {}, format="json"), 404)
    assert outsider.get(LIST).json()["results"] == []
    assert outsider.get(LIST, {"search": "Payroll"}).json()["results"] == []
    # Nor can a review be started on it by someone who may not see it.
    other = drive(declare("Payroll again", restricted=True), S.RESOLVED)
    error = assert_error(outsider.post(LIST, {"incident": other.reference}, format="json"), 400)
    assert "There is no incident" in str(error["fields"])
    assert not Review.objects.filter(incident=other).exists()
    # A member of the incident sees its review.
    incident_services.incident_member_add(incident=secret, user=team["rita"], actor=None)
    assert outsider.get(detail(review)).status_code == 200


def test_list_runs_the_same_number_of_queries_at_page_size_1_and_100(team):
    api = client_for(team["rita"])
    for n in range(101):
        incident = drive(declare(f"Incident {n}", services=[ServiceFactory()]), S.RESOLVED)
        review = review_services.review_create(incident=incident, actor=team["rita"], reviewers=[team["rob"]])
        review_services.review_factor_add(review=review, actor=team["rita"], category="other", description="x")

    def queries_at(size):
        api.get(LIST, {"page_size": size})
        with CaptureQueriesContext(connection) as ctx:
            response = api.get(LIST, {"page_size": size})
        assert len(response.json()["results"]) == size
        return len(ctx.captured_queries)

    assert queries_at(1) == queries_at(100)
