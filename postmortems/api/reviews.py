"""/api/v1/postmortems/: post-incident reviews and the knowledge base of published ones.

Generic reads (a review follows its incident's visibility: a restricted incident's review is a 404 for
those who may not see the incident), service writes, the admin's permissions.
"""

import django_filters as filters
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Exists, OuterRef, Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from incidents.api.errors import Conflict
from incidents.api.filters import (
    MultipleValueFilter,
    SeverityFilter,
    StatusFilter,
    StrictBooleanFilter,
    UTCDateTimeFilter,
)
from incidents.api.schema import error_response
from incidents.api.serializers import IncidentReferenceField, LookupField
from incidents.api.views import ApiViewMixin
from incidents.models import Incident, Service

from .. import selectors
from .. import services as review_services
from ..models import REVIEW_SECTIONS, ContributingFactor, Review, ReviewReviewer, ReviewTemplate

SECTION_NAMES = [name for name, _label in REVIEW_SECTIONS]
MAX_TEXT = 100_000


# ---- serializers ------------------------------------------------------------------------------


class ContributingFactorSerializer(serializers.ModelSerializer):
    description = serializers.CharField(max_length=MAX_TEXT)

    class Meta:
        model = ContributingFactor
        fields = ["id", "category", "description"]
        read_only_fields = ["id"]


class ReviewerSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    approved = serializers.BooleanField(read_only=True)

    class Meta:
        model = ReviewReviewer
        fields = ["user", "added_at", "approved_at", "approved"]
        read_only_fields = fields


class PersonNamedSerializer(serializers.Serializer):
    section = serializers.CharField(help_text="The section's field name, or `factors` for a contributing factor.")
    section_label = serializers.CharField()
    text = serializers.CharField(help_text="The name as written.")
    users = serializers.ListField(child=serializers.CharField(), help_text="Usernames this name belongs to.")


class SimilarIncidentSerializer(serializers.Serializer):
    reference = serializers.CharField(source="incident.reference")
    title = serializers.CharField(source="incident.title")
    status = serializers.CharField(source="incident.status")
    detected_at = serializers.DateTimeField(source="incident.detected_at")
    url = serializers.SerializerMethodField()
    score = serializers.IntegerField()
    reasons = serializers.ListField(child=serializers.CharField())

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, found):
        request = self.context["request"]
        return request.build_absolute_uri(f"/api/v1/incidents/{found.incident.pk}/")


class ReviewSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:review-detail")
    incident = serializers.CharField(source="incident.reference", read_only=True, help_text="e.g. INC-1042")
    incident_id = serializers.IntegerField(read_only=True)
    incident_title = serializers.CharField(source="incident.title", read_only=True)
    incident_status = serializers.CharField(source="incident.status", read_only=True)
    severity = serializers.IntegerField(source="incident.severity.level", read_only=True)
    review_required = serializers.BooleanField(source="incident.severity.review_required", read_only=True)
    services = serializers.SerializerMethodField()
    template = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    author = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    published_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    factors = ContributingFactorSerializer(many=True, read_only=True)
    reviewers = ReviewerSerializer(many=True, read_only=True)
    people_named = serializers.SerializerMethodField(
        help_text="Blameless check: where sections name people from the user table. Publishing then needs "
        "acknowledge_named_people=true."
    )

    class Meta:
        model = Review
        fields = [
            "id",
            "url",
            "incident",
            "incident_id",
            "incident_title",
            "incident_status",
            "severity",
            "review_required",
            "services",
            "status",
            "template",
            "author",
            "facts",
            *SECTION_NAMES,
            "factors",
            "reviewers",
            "people_named",
            "created_at",
            "updated_at",
            "submitted_at",
            "published_at",
            "published_by",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_services(self, review):
        return [s.slug for s in review.incident.services.all()]

    @extend_schema_field(PersonNamedSerializer(many=True))
    def get_people_named(self, review):
        matcher = self.context.get("people_matcher")
        return review_services.review_people_named(review, matcher=matcher, factors=list(review.factors.all()))


class ReviewDetailSerializer(ReviewSerializer):
    similar_incidents = serializers.SerializerMethodField(help_text="Earlier incidents like this one (visible ones).")
    recurrence_of = serializers.SerializerMethodField(help_text="The earlier incident this one repeats.")
    recurrences = serializers.SerializerMethodField(help_text="Later incidents that repeat this one.")

    class Meta(ReviewSerializer.Meta):
        fields = [*ReviewSerializer.Meta.fields, "similar_incidents", "recurrence_of", "recurrences"]
        read_only_fields = fields

    def _links(self, review):
        if not hasattr(self, "_recurrence"):
            self._recurrence = selectors.recurrence_links(review.incident, self.context["request"].user)
        return self._recurrence

    @extend_schema_field(SimilarIncidentSerializer(many=True))
    def get_similar_incidents(self, review):
        found = selectors.similar_incidents(review.incident, self.context["request"].user)
        return SimilarIncidentSerializer(found, many=True, context=self.context).data

    @extend_schema_field({"type": "string", "nullable": True, "example": "INC-1042"})
    def get_recurrence_of(self, review):
        earlier, _later = self._links(review)
        return earlier.reference if earlier else None

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_recurrences(self, review):
        _earlier, later = self._links(review)
        return [incident.reference for incident in later]


class UsernamesField(LookupField):
    def __init__(self, **kwargs):
        super().__init__(
            slug_field="username", queryset=get_user_model().objects.filter(is_active=True), **kwargs
        )


class ReviewCreateSerializer(serializers.Serializer):
    incident = IncidentReferenceField(help_text="The incident to review, e.g. INC-1042.")
    template = LookupField(
        slug_field="name",
        queryset=ReviewTemplate.objects.all(),
        required=False,
        allow_null=True,
        help_text="A template's name; the default template otherwise.",
    )
    reviewers = serializers.ListField(
        child=UsernamesField(), required=False, max_length=50, help_text="Usernames of the reviewers to name."
    )


class FactorInputSerializer(serializers.Serializer):
    category = serializers.ChoiceField(choices=ContributingFactor.Category.choices)
    description = serializers.CharField(max_length=MAX_TEXT)


class ReviewUpdateSerializer(serializers.Serializer):
    """Sections to change, and optionally the whole list of reviewers or of contributing factors."""

    reviewers = serializers.ListField(
        child=UsernamesField(), required=False, max_length=50, help_text="The reviewers, by username (replaces)."
    )
    factors = FactorInputSerializer(many=True, required=False, help_text="The contributing factors (replaces).")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, label in REVIEW_SECTIONS:
            self.fields[name] = serializers.CharField(
                required=False, allow_blank=True, max_length=MAX_TEXT, help_text=label
            )


class PublishSerializer(serializers.Serializer):
    acknowledge_named_people = serializers.BooleanField(
        default=False,
        help_text="Required (true) when the review names people: you read the warning and publish anyway.",
    )


class ReopenSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class EmptySerializer(serializers.Serializer):
    pass


# ---- filters -----------------------------------------------------------------------------------


class ReviewFilterSet(filters.FilterSet):
    search = filters.CharFilter(
        method="filter_search",
        help_text="Words found in any section, the incident's title or summary, or a contributing factor "
        "(every word must match); or a reference, INC-1042.",
    )
    status = StatusFilter(choices=Review.Status.choices, help_text="One or more: draft, in_review, published.")
    severity = SeverityFilter(field_name="incident__severity__level", help_text="Severity levels, e.g. 1,2.")
    service = MultipleValueFilter(method="filter_service", help_text="Service slugs.")
    category = MultipleValueFilter(method="filter_category", help_text="Contributing-factor categories.")
    required = StrictBooleanFilter(
        field_name="incident__severity__review_required", help_text="Reviews the incident's severity requires."
    )
    published_after = UTCDateTimeFilter(field_name="published_at", lookup_expr="gte")
    published_before = UTCDateTimeFilter(field_name="published_at", lookup_expr="lt")
    ordering = filters.OrderingFilter(
        fields=(("created_at", "created_at"), ("updated_at", "updated_at")),
        help_text="created_at or updated_at; prefix with - for descending. Default: -created_at.",
    )

    class Meta:
        model = Review
        fields = []

    def filter_search(self, queryset, name, value):
        return selectors.review_search(queryset, value)

    def filter_service(self, queryset, name, value):
        if not value:
            return queryset
        links = Incident.services.through.objects.filter(incident_id=OuterRef("incident_id"), service__slug__in=value)
        return queryset.filter(Exists(links))

    def filter_category(self, queryset, name, value):
        if not value:
            return queryset
        factors = ContributingFactor.objects.filter(review=OuterRef("pk"), category__in=value)
        return queryset.filter(Exists(factors))


# ---- the view ----------------------------------------------------------------------------------

STATE_CONFLICT = error_response("The review's state does not allow this step (e.g. publishing before approval).")
PEOPLE_NAMED = error_response(
    "Code `people_named`: the review names people (listed in `error.fields.people_named`); send "
    "acknowledge_named_people=true to publish anyway. Code `review_state`: not submitted, or approvals missing."
)
CHANGE = ["postmortems.view_review", "postmortems.change_review"]


@extend_schema_view(
    list=extend_schema(
        summary="List and search post-incident reviews",
        description="Newest first. `search` looks through every section; filter to `status=published` for the "
        "knowledge base. Reviews of restricted incidents are listed only for those who may see the incident.",
    ),
    retrieve=extend_schema(
        summary="Get a post-incident review",
        description="With the blameless check, similar past incidents and recurrence links.",
    ),
)
class ReviewViewSet(ApiViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = ReviewSerializer
    filterset_class = ReviewFilterSet
    lookup_value_regex = r"\d+"
    queryset = Review.objects.all()
    action_permissions = {step: {"POST": CHANGE} for step in ("submit", "approve", "publish", "reopen")}

    def get_queryset(self):
        reviews = selectors.review_list(self.request.user)
        if self.action in ("list", "retrieve"):
            reviews = self.for_output(reviews)
        return reviews

    @staticmethod
    def for_output(reviews):
        return reviews.select_related(
            "incident", "incident__severity", "template", "author", "published_by"
        ).prefetch_related(
            Prefetch("incident__services", queryset=Service.objects.only("id", "slug")),
            "factors",
            Prefetch("reviewers", queryset=ReviewReviewer.objects.select_related("user")),
        )

    def filter_queryset(self, queryset):
        return super().filter_queryset(queryset) if self.action == "list" else queryset

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.request is not None and self.request.method == "GET":
            context["people_matcher"] = review_services.people_name_matcher()  # one query per request
        return context

    def get_serializer_class(self):
        if self.request is not None and self.request.method in ("POST", "PATCH"):
            return {
                "list": ReviewCreateSerializer,
                "create": ReviewCreateSerializer,
                "retrieve": ReviewUpdateSerializer,
                "partial_update": ReviewUpdateSerializer,
                "publish": PublishSerializer,
                "reopen": ReopenSerializer,
            }.get(self.action, EmptySerializer)
        return ReviewDetailSerializer if self.action == "retrieve" else ReviewSerializer

    def validated(self, serializer_class):
        serializer = serializer_class(data=self.request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def review_response(self, review, status_code=status.HTTP_200_OK):
        review = self.for_output(Review.objects.all()).get(pk=review.pk)
        context = {**self.get_serializer_context(), "people_matcher": review_services.people_name_matcher()}
        data = ReviewDetailSerializer(review, context=context).data
        headers = {"Location": data["url"]} if status_code == status.HTTP_201_CREATED else {}
        return Response(data, status=status_code, headers=headers)

    def run(self, step, **kwargs):
        """Call a workflow service; a step the review's state refuses is a 409."""
        try:
            return step(actor=self.request.user, **kwargs)
        except review_services.PeopleNamed as exc:
            raise Conflict(
                {"detail": str(exc), "people_named": [f"{m['section_label']}: {m['text']}" for m in exc.matches]},
                code="people_named",
            ) from None
        except review_services.ReviewConflict as exc:
            raise Conflict(str(exc), code="review_state") from None

    @extend_schema(
        summary="Start the review of an incident",
        description="Created from a template and pre-filled from the incident (timeline, durations, roles, "
        "services, impact). An incident has one review: if it exists already, it is returned (200).",
        request=ReviewCreateSerializer,
        responses={201: ReviewDetailSerializer, 200: ReviewDetailSerializer},
    )
    def create(self, request):
        data = self.validated(ReviewCreateSerializer)
        existed = Review.objects.filter(incident=data["incident"]).exists()
        review = self.run(
            review_services.review_create,
            incident=data["incident"],
            template=data.get("template"),
            reviewers=data.get("reviewers", ()),
        )
        return self.review_response(review, status.HTTP_200_OK if existed else status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit a review's sections, reviewers or contributing factors",
        description="`reviewers` and `factors` replace the whole list. In review, a change to the text withdraws "
        "the approvals given. A published review must be reopened first (409).",
        request=ReviewUpdateSerializer,
        responses={200: ReviewDetailSerializer, 409: STATE_CONFLICT},
    )
    def partial_update(self, request, pk=None):
        review = self.get_object()
        data = self.validated(ReviewUpdateSerializer)
        reviewers = data.pop("reviewers", None)
        factors = data.pop("factors", None)
        with transaction.atomic():
            if data:
                review = self.run(review_services.review_update, review=review, **data)
            if reviewers is not None:
                review = self.run(review_services.review_reviewers_set, review=review, users=reviewers)
            if factors is not None:
                review = self.run(review_services.review_factors_set, review=review, factors=factors)
        return self.review_response(review)

    @extend_schema(
        summary="Submit a review for approval",
        description="Draft → in review. Needs at least one named reviewer.",
        request=EmptySerializer,
        responses={200: ReviewDetailSerializer, 409: STATE_CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        review = self.get_object()
        return self.review_response(self.run(review_services.review_submit, review=review))

    @extend_schema(
        summary="Approve a review (as one of its named reviewers)",
        description="Only named reviewers may approve, and not the review's author.",
        request=EmptySerializer,
        responses={200: ReviewDetailSerializer, 409: STATE_CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        review = self.get_object()
        return self.review_response(self.run(review_services.review_approve, review=review))

    @extend_schema(
        summary="Publish a review",
        description="In review → published once every named reviewer approved; recorded on the incident's "
        "timeline. If the review names people, send acknowledge_named_people=true (else 409, code people_named).",
        request=PublishSerializer,
        responses={200: ReviewDetailSerializer, 409: PEOPLE_NAMED},
    )
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        review = self.get_object()
        data = self.validated(PublishSerializer)
        review = self.run(
            review_services.review_publish,
            review=review,
            acknowledge_named_people=data["acknowledge_named_people"],
        )
        return self.review_response(review)

    @extend_schema(
        summary="Reopen a review as a draft",
        description="From in review or published; approvals are withdrawn.",
        request=ReopenSerializer,
        responses={200: ReviewDetailSerializer, 409: STATE_CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def reopen(self, request, pk=None):
        review = self.get_object()
        data = self.validated(ReopenSerializer)
        return self.review_response(self.run(review_services.review_reopen, review=review, reason=data["reason"]))


ROUTES = [("postmortems", ReviewViewSet, "review")]
