"""Generic reads, service writes. Every view here needs a key (or a session) and the admin's permissions."""

import re

from django.contrib.auth import get_user_model
from django.contrib.postgres.expressions import ArraySubquery
from django.db import connection, transaction
from django.db.models import F, OuterRef, Prefetch, Subquery
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.routers import APIRootView

from incidents import services
from incidents.models import (
    Alert,
    CustomerReport,
    Incident,
    IncidentMember,
    RoleAssignment,
    Service,
    Severity,
    references_hidden_from,
)
from incidents.selectors import incident_impact

from .base import ApiViewMixin
from .customer_reports import (
    INCIDENT_ACTION_SCHEMA,
    CustomerReportInputSerializer,
    CustomerReportSerializer,
    ImpactSerializer,
    create_report,
    customer_report_created_response,
)
from .errors import PreconditionFailed
from .filters import IncidentFilterSet
from .schema import error_response
from .serializers import (
    AcknowledgeInputSerializer,
    AlertSerializer,
    IncidentDeclareInputSerializer,
    IncidentInputSerializer,
    IncidentMemberSerializer,
    IncidentSerializer,
    MemberAddInputSerializer,
    MemberRemovedSerializer,
    NoteInputSerializer,
    RoleAssignInputSerializer,
    RoleAssignmentSerializer,
    ServiceSerializer,
    SeveritySerializer,
    TimelineEventSerializer,
    TransitionInputSerializer,
)

ETAG = re.compile(r'(?:W/)?"(\d{1,18})-(\d{1,18})"')  # bounded: int() of 5,000 digits raises

IF_MATCH = OpenApiParameter(
    "If-Match",
    str,
    OpenApiParameter.HEADER,
    description="The ETag from your last read. If the incident changed since, nothing is changed and you get 412.",
)
ETAG_HEADER = OpenApiParameter(
    "ETag",
    str,
    OpenApiParameter.HEADER,
    response=[200, 201],
    description="The incident's version: send it back as If-Match to refuse lost updates.",
)
STALE = error_response("If-Match names an older version of the incident: reload it and apply your change again.")


def incident_etag(incident):
    return f'"{incident.pk}-{incident.version}"'


class ApiRootView(ApiViewMixin, APIRootView):
    permission_classes = [IsAuthenticated]
    schema = None


@extend_schema_view(
    list=extend_schema(summary="List incidents", description="Newest first by default; see the filters."),
    retrieve=extend_schema(summary="Get an incident", parameters=[ETAG_HEADER]),
)
class IncidentViewSet(ApiViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    queryset = Incident.objects.all()
    serializer_class = IncidentSerializer
    filterset_class = IncidentFilterSet
    lookup_value_regex = r"\d+"
    # Model permissions cover list, retrieve, create and partial_update; the actions name theirs.
    action_permissions = {
        "transition": {"POST": ["incidents.view_incident", "incidents.change_incident"]},
        "acknowledge": {"POST": ["incidents.view_incident", "incidents.change_incident"]},
        "timeline": {
            "GET": ["incidents.view_incident", "incidents.view_timelineevent"],
            "POST": ["incidents.view_incident", "incidents.add_timelineevent"],
        },
        "roles": {
            "GET": ["incidents.view_incident", "incidents.view_roleassignment"],
            "POST": ["incidents.view_incident", "incidents.add_roleassignment"],
        },
        "customer_reports": {
            "GET": ["incidents.view_incident", "incidents.view_customerreport"],
            "POST": ["incidents.view_incident", "incidents.add_customerreport"],
        },
        "relieve": {"POST": ["incidents.view_incident", "incidents.change_roleassignment"]},
        "members": {
            "GET": ["incidents.view_incident", "incidents.view_incidentmember"],
            "POST": ["incidents.view_incident", "incidents.add_incidentmember"],
        },
        # Responders run membership with add and change (as in the admin's inline); removing is a change.
        "member_remove": {"DELETE": ["incidents.view_incident", "incidents.change_incidentmember"]},
        "alerts": {"GET": ["incidents.view_incident", "incidents.view_alert"]},
    }

    def get_queryset(self):
        # Writes reload the incident for their response; every action sees only what the user may see
        # (a restricted incident is a 404 for others, so its existence does not leak).
        incidents = {"list": self.incidents_for_list, "retrieve": self.incidents_for_output}.get(
            self.action, Incident.objects.all
        )()
        return incidents.visible_to(self.request.user)

    def incidents_for_output(self):
        incidents = Incident.objects.select_related("severity", "commander", "recurrence_of", "duplicate_of")
        return self.with_service_slugs(incidents)

    def incidents_for_list(self):
        """A page of the list: the few columns it shows of the severity, commander and linked incidents as
        columns of its own query, rather than their whole rows made into objects (IncidentSerializer reads
        either). The optional ones are scalar subqueries, not LEFT JOINs: each costs a primary-key probe for
        the page's rows alone, while three more joined tables cost PostgreSQL ~1 ms to plan (~2.5 ms with a
        filter's semi join), more than reading the page. The annotated queryset depends on nothing in the
        request: it is built once per process and cloned, like a view's ``queryset`` attribute."""
        cls = type(self)
        if "_list_queryset" not in cls.__dict__:
            cls._list_queryset = self.list_queryset()
        return cls._list_queryset.all()

    @classmethod
    def list_queryset(cls):
        def linked(field, column):
            return Subquery(Incident.objects.filter(pk=OuterRef(f"{field}_id")).order_by().values(column))

        incidents = Incident.objects.annotate(
            severity_level=F("severity__level"),
            commander_username=Subquery(
                get_user_model().objects.filter(pk=OuterRef("commander_id")).order_by().values("username")
            ),
            recurrence_number=linked("recurrence_of", "number"),
            recurrence_restricted=linked("recurrence_of", "is_restricted"),
            duplicate_number=linked("duplicate_of", "number"),
            duplicate_restricted=linked("duplicate_of", "is_restricted"),
        )
        return cls.with_service_slugs(incidents)

    @staticmethod
    def with_service_slugs(incidents):
        if connection.vendor == "postgresql":
            # The services' slugs as an array column of the page's own query: one round trip fewer.
            slugs = Service.objects.filter(incidents=OuterRef("pk")).order_by("name").values("slug")
            return incidents.annotate(service_slugs=ArraySubquery(slugs))
        return incidents.prefetch_related(Prefetch("services", queryset=Service.objects.only("id", "slug", "name")))

    def filter_queryset(self, queryset):
        if self.action != "list" or not self.request.query_params.keys() & self.filterset_class.base_filters.keys():
            return queryset  # no filter asked for: skip building the filter set and its form
        return super().filter_queryset(queryset)

    # What each write accepts; responses are IncidentSerializer (or the timeline's and roles' own).
    input_serializers = {
        "create": IncidentDeclareInputSerializer,
        "partial_update": IncidentInputSerializer,
        "transition": TransitionInputSerializer,
        "acknowledge": AcknowledgeInputSerializer,
        "timeline": NoteInputSerializer,
        "roles": RoleAssignInputSerializer,
        "members": MemberAddInputSerializer,
        "customer_reports": CustomerReportInputSerializer,
    }

    def get_serializer_class(self):
        if self.request is not None and self.request.method in ("POST", "PATCH"):
            # The browsable API asks from the list or detail view for its create and edit forms.
            action = {"list": "create", "retrieve": "partial_update"}.get(self.action, self.action)
            return self.input_serializers.get(action, IncidentSerializer)
        return IncidentSerializer

    def validated(self, **kwargs):
        serializer = self.get_serializer(data=self.request.data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def incident_response(self, incident, status_code=status.HTTP_200_OK):
        incident = self.incidents_for_output().get(pk=incident.pk)
        serializer = IncidentSerializer(incident, context=self.get_serializer_context())
        headers = {"ETag": incident_etag(incident)}
        if status_code == status.HTTP_201_CREATED:
            headers["Location"] = serializer.data["url"]
        return Response(serializer.data, status=status_code, headers=headers)

    def expected_version(self, incident):
        """The version named by If-Match, None without one (or with *); 412 if it names no version of this incident."""
        header = self.request.headers.get("If-Match")
        if header is None:
            return None
        tags = [tag.strip() for tag in header.split(",")]
        if "*" in tags:
            return None
        versions = [int(m[2]) for m in map(ETAG.fullmatch, tags) if m and int(m[1]) == incident.pk]
        if not versions:
            raise PreconditionFailed(
                f"If-Match does not name a version of {incident.reference}: read it for its ETag.", code="stale"
            )
        return incident.version if incident.version in versions else versions[0]

    def check_version(self, incident):
        """In the caller's transaction: lock the incident and refuse (412) if If-Match names an older version."""
        expected = self.expected_version(incident)
        if expected is not None:
            services.incident_update(incident=incident, actor=self.request.user, expected_version=expected)

    def retrieve(self, request, *args, **kwargs):
        incident = self.get_object()
        return Response(
            IncidentSerializer(incident, context=self.get_serializer_context()).data,
            headers={"ETag": incident_etag(incident)},
        )

    @extend_schema(
        summary="Declare an incident",
        description="The declaring user takes command unless `commander` names someone else (or is null). "
        "Declaring a restricted incident keeps it visible to the declaring user.",
        request=IncidentDeclareInputSerializer,
        responses={201: IncidentSerializer},
        parameters=[ETAG_HEADER],
    )
    def create(self, request):
        data = self.validated()
        incident = services.incident_declare_by_person(
            person=request.user,
            restricted=data.pop("is_restricted", False),
            commander=data.pop("commander", request.user),
            **data,
        )
        return self.incident_response(incident, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit an incident",
        description="Severity changes and detail edits are recorded on the timeline. Status moves use transition.",
        request=IncidentInputSerializer,
        responses={200: IncidentSerializer, 412: STALE},
        parameters=[IF_MATCH, ETAG_HEADER],
    )
    def partial_update(self, request, pk=None):
        incident = self.get_object()
        data = self.validated(partial=True)
        severity = data.pop("severity", None)
        restricted = data.pop("is_restricted", None)
        with transaction.atomic():
            incident = services.incident_update(
                incident=incident, actor=request.user, expected_version=self.expected_version(incident), **data
            )
            if severity is not None:
                incident = services.incident_severity_change(incident=incident, severity=severity, actor=request.user)
            if restricted is not None:
                incident = services.incident_restriction_set(
                    incident=incident, restricted=restricted, actor=request.user
                )
        return self.incident_response(incident)

    @extend_schema(
        summary="Move an incident through its lifecycle",
        request=TransitionInputSerializer,
        responses={
            200: IncidentSerializer,
            409: error_response("The lifecycle does not allow this move from the current status."),
            412: STALE,
        },
        parameters=[IF_MATCH, ETAG_HEADER],
    )
    @action(detail=True, methods=["post"])
    def transition(self, request, pk=None):
        incident = self.get_object()
        data = self.validated()
        with transaction.atomic():
            self.check_version(incident)
            incident = services.incident_transition(
                incident=incident, to=data["to"], actor=request.user, note=data["note"]
            )
        return self.incident_response(incident)

    @extend_schema(
        summary="Acknowledge an incident",
        description="Stamps the first acknowledgement once, and starts triage if nobody has.",
        request=AcknowledgeInputSerializer,
        responses={200: IncidentSerializer, 412: STALE},
        parameters=[IF_MATCH, ETAG_HEADER],
    )
    @action(detail=True, methods=["post"])
    def acknowledge(self, request, pk=None):
        incident = self.get_object()
        data = self.validated()
        with transaction.atomic():
            self.check_version(incident)
            incident = services.incident_acknowledge(incident=incident, actor=request.user, note=data["note"])
        return self.incident_response(incident)

    @extend_schema(methods=["GET"], summary="An incident's timeline", responses=TimelineEventSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        summary="Add a note to the timeline",
        request=NoteInputSerializer,
        responses={201: TimelineEventSerializer},
    )
    @action(detail=True, methods=["get", "post"], filter_backends=[])
    def timeline(self, request, pk=None):
        incident = self.get_object()
        if request.method == "POST":
            data = self.validated()
            event = services.timeline_note_add(incident=incident, actor=request.user, **data)
            return Response(TimelineEventSerializer(event).data, status=status.HTTP_201_CREATED)
        page = self.paginate_queryset(incident.timeline.select_related("actor"))
        context = {"hidden_references": references_hidden_from(request.user, page)}
        return self.get_paginated_response(TimelineEventSerializer(page, many=True, context=context).data)

    @extend_schema(
        methods=["GET"], summary="An incident's roles, past and present", responses=RoleAssignmentSerializer(many=True)
    )
    @extend_schema(
        methods=["POST"],
        summary="Assign a role",
        description="For single-holder roles the current holder is handed over from; the history is kept.",
        request=RoleAssignInputSerializer,
        responses={201: RoleAssignmentSerializer},
    )
    @action(detail=True, methods=["get", "post"], filter_backends=[])
    def roles(self, request, pk=None):
        incident = self.get_object()
        if request.method == "POST":
            data = self.validated()
            assignment = services.role_assign(incident=incident, actor=request.user, **data)
            return Response(RoleAssignmentSerializer(assignment).data, status=status.HTTP_201_CREATED)
        page = self.paginate_queryset(incident.role_assignments.select_related("user", "assigned_by"))
        return self.get_paginated_response(RoleAssignmentSerializer(page, many=True).data)

    @extend_schema(
        summary="Relieve a role without a successor",
        description="Ends the assignment now (a handover goes through POST roles/). Relieving the commander "
        "leaves the incident without one. Relieving an assignment that already ended changes nothing.",
        request=None,
        responses={200: RoleAssignmentSerializer},
    )
    @action(detail=True, methods=["post"], url_path=r"roles/(?P<assignment_id>\d{1,18})/relieve", filter_backends=[])
    def relieve(self, request, pk=None, assignment_id=None):
        incident = self.get_object()
        assignment = get_object_or_404(RoleAssignment, pk=assignment_id, incident=incident)
        assignment = services.role_relieve(assignment=assignment, actor=request.user)
        return Response(RoleAssignmentSerializer(assignment).data)

    @extend_schema(
        methods=["GET"],
        summary="An incident's members",
        description="People added to the incident without a role (they see it while it is restricted).",
        responses=IncidentMemberSerializer(many=True),
    )
    @extend_schema(
        methods=["POST"],
        summary="Add a member",
        description="Lets someone see a restricted incident without giving them a role; on the timeline. "
        "Adding someone who already is a member changes nothing (200).",
        request=MemberAddInputSerializer,
        responses={201: IncidentMemberSerializer, 200: IncidentMemberSerializer},
    )
    @action(detail=True, methods=["get", "post"], filter_backends=[])
    def members(self, request, pk=None):
        incident = self.get_object()
        if request.method == "POST":
            user = self.validated()["user"]
            existed = IncidentMember.objects.filter(incident=incident, user=user).exists()
            member = services.incident_member_add(incident=incident, user=user, actor=request.user)
            member = IncidentMember.objects.select_related("user", "added_by").get(pk=member.pk)
            code = status.HTTP_200_OK if existed else status.HTTP_201_CREATED
            return Response(IncidentMemberSerializer(member).data, status=code)
        page = self.paginate_queryset(incident.members.select_related("user", "added_by"))
        return self.get_paginated_response(IncidentMemberSerializer(page, many=True).data)

    @extend_schema(
        summary="Remove a member",
        description="Takes someone off the incident (on the timeline). `notices` says what they leave behind, "
        "e.g. open action items they still own but can no longer see.",
        request=None,
        responses={200: MemberRemovedSerializer},
    )
    @action(detail=True, methods=["delete"], url_path=r"members/(?P<username>[\w.@+-]{1,150})", filter_backends=[])
    def member_remove(self, request, pk=None, username=None):
        incident = self.get_object()
        member = get_object_or_404(
            IncidentMember.objects.select_related("user"), incident=incident, user__username=username
        )
        notices = services.incident_member_remove(member=member, actor=request.user)
        return Response({"user": username, "notices": notices})

    @extend_schema(
        summary="An incident's alerts",
        description="The alerts monitoring sent for this incident, newest first, firing and resolved.",
        responses=AlertSerializer(many=True),
    )
    @action(detail=True, methods=["get"], filter_backends=[])
    def alerts(self, request, pk=None):
        incident = self.get_object()
        alerts = Alert.objects.filter(incident=incident).select_related("group__integration")
        page = self.paginate_queryset(alerts)
        return self.get_paginated_response(AlertSerializer(page, many=True).data)

    @INCIDENT_ACTION_SCHEMA[0]
    @INCIDENT_ACTION_SCHEMA[1]
    @action(detail=True, methods=["get", "post"], url_path="customer-reports", filter_backends=[])
    def customer_reports(self, request, pk=None):
        incident = self.get_object()
        if request.method == "POST":
            report, created = create_report(request, dict(self.validated()), incident)
            return customer_report_created_response(report, created)
        reports = CustomerReport.objects.filter(incident=incident).select_related("incident", "created_by", "account")
        page = self.paginate_queryset(reports)
        return Response(
            {
                "incident": incident.reference,
                "impact": ImpactSerializer(incident_impact(incident)).data,
                "next": self.paginator.next_link,
                "previous": self.paginator.previous_link,
                "results": CustomerReportSerializer(page, many=True).data,
            }
        )


@extend_schema_view(
    list=extend_schema(summary="List services"),
    retrieve=extend_schema(summary="Get a service"),
    create=extend_schema(summary="Add a service"),
    update=extend_schema(summary="Replace a service"),
    partial_update=extend_schema(summary="Edit a service"),
)
class ServiceViewSet(
    ApiViewMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Reference data with no lifecycle: saved directly, as the admin does."""

    queryset = Service.objects.select_related("group")
    serializer_class = ServiceSerializer
    lookup_field = "slug"
    lookup_value_regex = r"[-a-zA-Z0-9_]+"


@extend_schema_view(
    list=extend_schema(summary="List severity levels"), retrieve=extend_schema(summary="Get a severity")
)
class SeverityViewSet(ApiViewMixin, viewsets.ReadOnlyModelViewSet):
    queryset = Severity.objects.all()
    serializer_class = SeveritySerializer
    lookup_field = "level"
    lookup_value_regex = r"\d+"
