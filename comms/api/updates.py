"""/api/v1/updates/ and /api/v1/update-templates/: reads are generic, every write goes through comms.services."""

import django_filters as filters
from django.db.models import Prefetch, Q
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from comms import services as comms_services
from comms.models import ComponentStatus, Update, UpdateComponent, UpdateTemplate
from comms.public_name import incident_public_name
from incidents.api.errors import Conflict
from incidents.api.filters import MultipleValueFilter, StrictBooleanFilter
from incidents.api.schema import error_response
from incidents.api.serializers import IncidentReferenceField
from incidents.api.views import ApiViewMixin
from incidents.models import Service, visible_incident_rows

# ---- serializers


class UsernameField(serializers.SlugRelatedField):
    def __init__(self, **kwargs):
        super().__init__(slug_field="username", read_only=True, allow_null=True, **kwargs)


class UpdateComponentSerializer(serializers.ModelSerializer):
    service = serializers.SlugRelatedField(
        slug_field="slug", queryset=Service.objects.filter(is_public=True), help_text="A public service's slug."
    )
    name = serializers.CharField(source="service.name", read_only=True)
    status = serializers.ChoiceField(choices=ComponentStatus.choices)

    class Meta:
        model = UpdateComponent
        fields = ["service", "name", "status"]


class PublicIdentitySerializer(serializers.Serializer):
    incident = IncidentReferenceField(help_text="The incident's reference, e.g. INC-1042.")
    public_title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    public_impact = serializers.CharField(required=False, allow_blank=True, help_text="What customers notice.")
    public_name = serializers.CharField(read_only=True, help_text="What the public sees it called.")


class UpdateSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:update-detail")
    incident = IncidentReferenceField(read_only=True)
    public_status = serializers.ChoiceField(
        choices=Update.PublicStatus.choices, allow_blank=True, read_only=True, help_text="Empty for internal updates."
    )
    components = UpdateComponentSerializer(many=True, read_only=True)
    body_html = serializers.CharField(
        read_only=True, help_text="Sanitised HTML: as published, or for a draft as it was last saved."
    )
    template = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    corrects = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="The published update this one corrects."
    )
    author = UsernameField()
    submitted_by = UsernameField()
    approved_by = UsernameField()
    published_by = UsernameField()
    approval_required = serializers.SerializerMethodField(
        help_text="An approval by another person is needed before publishing."
    )

    class Meta:
        model = Update
        fields = [
            "id",
            "url",
            "incident",
            "audience",
            "public_status",
            "status",
            "title",
            "body",
            "body_html",
            "components",
            "template",
            "corrects",
            "approval_required",
            "author",
            "created_at",
            "updated_at",
            "submitted_by",
            "submitted_at",
            "approved_by",
            "approved_at",
            "published_by",
            "published_at",
        ]
        read_only_fields = fields

    def get_approval_required(self, update) -> bool:
        return comms_services.approval_required(update)


class UpdateCreateSerializer(serializers.Serializer):
    incident = IncidentReferenceField(help_text="The incident, e.g. INC-1042.")
    audience = serializers.ChoiceField(
        choices=Update.Audience.choices, required=False, help_text="Taken from the template when omitted."
    )
    template = serializers.PrimaryKeyRelatedField(
        queryset=UpdateTemplate.objects.filter(is_active=True),
        required=False,
        allow_null=True,
        help_text="Its title and body fill the ones you leave out.",
    )
    public_status = serializers.ChoiceField(choices=Update.PublicStatus.choices, required=False, allow_blank=True)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    body = serializers.CharField(required=False, allow_blank=True, help_text="Markdown, with placeholders.")
    components = UpdateComponentSerializer(many=True, required=False)


class UpdateEditSerializer(serializers.Serializer):
    public_status = serializers.ChoiceField(choices=Update.PublicStatus.choices, required=False, allow_blank=True)
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    body = serializers.CharField(required=False, allow_blank=True, help_text="Markdown, with placeholders.")
    components = UpdateComponentSerializer(many=True, required=False, help_text="Replaces the list.")


class UpdateCorrectSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200, required=False, allow_blank=True)
    body = serializers.CharField(required=False, help_text="Defaults to the original's text.")


class EmptySerializer(serializers.Serializer):
    pass


class UpdateTemplateSerializer(serializers.ModelSerializer):
    severity = serializers.SlugRelatedField(
        slug_field="level", read_only=True, allow_null=True, help_text="Severity level; null for any."
    )
    public_status = serializers.ChoiceField(
        choices=Update.PublicStatus.choices, allow_blank=True, read_only=True, help_text="Empty for any."
    )

    class Meta:
        model = UpdateTemplate
        fields = ["id", "name", "audience", "public_status", "severity", "title", "body", "is_active"]
        read_only_fields = fields


# ---- filters


class UpdateFilterSet(filters.FilterSet):
    incident = filters.CharFilter(method="filter_incident", help_text="An incident reference, e.g. INC-1042.")
    audience = MultipleValueFilter(help_text="internal, external (comma-separated for several).")
    status = MultipleValueFilter(help_text="draft, in_review, approved, published (comma-separated for several).")
    public_status = MultipleValueFilter(help_text="investigating, identified, monitoring, resolved, postmortem.")

    class Meta:
        model = Update
        fields = ["incident", "audience", "status", "public_status"]

    def filter_incident(self, queryset, name, value):
        text = value.strip().upper()
        number = text[4:] if text.startswith("INC-") else text
        if not number.isdigit() or len(number) > 9:
            raise exceptions.ValidationError({"incident": ["An incident reference looks like INC-1042."]})
        return queryset.filter(incident__number=int(number))


# ---- views

CONFLICT = error_response("The update's current state does not allow this step (e.g. editing a published update).")


def _components(data):
    if "components" not in data:
        return None
    return [(item["service"], item["status"]) for item in data["components"]]


@extend_schema_view(
    list=extend_schema(summary="List updates", description="Newest first. Only updates on incidents you may see."),
    retrieve=extend_schema(summary="Get an update"),
)
class UpdateViewSet(ApiViewMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Internal and external updates and their review workflow: draft → in review → approved → published."""

    queryset = Update.objects.all()
    serializer_class = UpdateSerializer
    filterset_class = UpdateFilterSet
    lookup_value_regex = r"\d+"
    action_permissions = {
        "submit": {"POST": ["comms.view_update", "comms.change_update"]},
        "send_back": {"POST": ["comms.view_update", "comms.change_update"]},
        "approve": {"POST": ["comms.view_update", "comms.approve_update"]},
        "publish": {"POST": ["comms.view_update", "comms.change_update"]},
        "correct": {"POST": ["comms.view_update", "comms.add_update"]},
        "public_identity": {"POST": ["comms.view_update", "comms.publish_external_update"]},
    }
    input_serializers = {
        "create": UpdateCreateSerializer,
        "partial_update": UpdateEditSerializer,
        "correct": UpdateCorrectSerializer,
        "public_identity": PublicIdentitySerializer,
    }

    def get_queryset(self):
        updates = Update.objects.select_related(
            "incident__severity", "author", "submitted_by", "approved_by", "published_by"
        ).prefetch_related(Prefetch("components", queryset=UpdateComponent.objects.select_related("service")))
        # A restricted incident's updates are a 404 and left out of lists for those who may not see it.
        return visible_incident_rows(updates, self.request.user, "incident")

    def get_serializer_class(self):
        if self.request is not None and self.request.method in ("POST", "PATCH"):
            action_name = {"list": "create", "retrieve": "partial_update"}.get(self.action, self.action)
            return self.input_serializers.get(action_name, EmptySerializer)
        return UpdateSerializer

    def handle_exception(self, exc):
        if isinstance(exc, comms_services.UpdatePermissionError):
            exc = exceptions.PermissionDenied(str(exc))
        elif isinstance(exc, comms_services.UpdateStepError):
            exc = Conflict(str(exc), code="invalid_step")
        elif isinstance(exc, comms_services.UpdateError):
            field = getattr(exc, "field", None)
            exc = exceptions.ValidationError({field: [str(exc)]} if field else [str(exc)])
        return super().handle_exception(exc)

    def validated(self, **kwargs):
        serializer = self.get_serializer(data=self.request.data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def update_response(self, update, status_code=status.HTTP_200_OK):
        update = self.get_queryset().get(pk=update.pk)
        data = UpdateSerializer(update, context=self.get_serializer_context()).data
        headers = {"Location": data["url"]} if status_code == status.HTTP_201_CREATED else {}
        return Response(data, status=status_code, headers=headers)

    @extend_schema(
        summary="Draft an update",
        description="From a template (its title and body fill the ones left out) or free text. "
        "Placeholders such as `{{ incident.title }}` are kept in the draft and filled when it is published; "
        "an unknown one is a 400.",
        request=UpdateCreateSerializer,
        responses={201: UpdateSerializer},
    )
    def create(self, request):
        data = dict(self.validated())
        components = _components(data)
        update = comms_services.update_draft_create(
            incident=data["incident"],
            actor=request.user,
            audience=data.get("audience"),
            template=data.get("template"),
            title=data.get("title", ""),
            body=data.get("body", ""),
            public_status=data.get("public_status", ""),
            components=components,
        )
        return self.update_response(update, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit a draft",
        request=UpdateEditSerializer,
        responses={200: UpdateSerializer, 409: CONFLICT},
    )
    def partial_update(self, request, pk=None):
        update = self.get_object()
        data = dict(self.validated())
        components = _components(data)
        fields = {name: data[name] for name in ("title", "body", "public_status") if name in data}
        update = comms_services.update_edit(update=update, actor=request.user, components=components, **fields)
        return self.update_response(update)

    def _step(self, service):
        update = self.get_object()
        return self.update_response(service(update=update, actor=self.request.user))

    @extend_schema(summary="Submit a draft for review", request=None, responses={200: UpdateSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def submit(self, request, pk=None):
        return self._step(comms_services.update_submit)

    @extend_schema(
        summary="Send an update in review back to draft",
        request=None,
        responses={200: UpdateSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"], url_path="send-back")
    def send_back(self, request, pk=None):
        return self._step(comms_services.update_return)

    @extend_schema(
        summary="Approve an update in review",
        description="By someone with the approve permission (the Communications group) other than its author "
        "and submitter.",
        request=None,
        responses={200: UpdateSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._step(comms_services.update_approve)

    @extend_schema(
        summary="Publish an update",
        description="External updates need the publish permission, and an approval first when the incident's "
        "severity requires one (SEV1 and SEV2 by default). Publishing again changes nothing.",
        request=None,
        responses={200: UpdateSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        return self._step(comms_services.update_publish)

    @extend_schema(
        summary="Correct a published update",
        description="Creates a draft correction (the original stays published as it was); it goes through the "
        "same review and publishing. While one is unpublished, asking again returns it.",
        request=UpdateCorrectSerializer,
        responses={201: UpdateSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def correct(self, request, pk=None):
        update = self.get_object()
        data = self.validated()
        correction = comms_services.update_correct(
            update=update, actor=request.user, title=data.get("title"), body=data.get("body")
        )
        return self.update_response(correction, status.HTTP_201_CREATED)


    @extend_schema(
        summary="Set an incident's public title and impact statement",
        description="What the status page, its feeds, subscriber e-mails and webhooks call the incident (its "
        "internal title and reference never reach them). Empty title: a neutral one from its public services.",
        request=PublicIdentitySerializer,
        responses={200: PublicIdentitySerializer},
    )
    @action(detail=False, methods=["post"], url_path="public-identity")
    def public_identity(self, request):
        data = self.validated()
        incident = comms_services.incident_public_identity_set(
            incident=data["incident"],
            actor=request.user,
            public_title=data.get("public_title", ""),
            public_impact=data.get("public_impact", ""),
        )
        return Response({
            "incident": incident.reference,
            "public_title": incident.public_title,
            "public_impact": incident.public_impact,
            "public_name": incident_public_name(incident),
        })


class UpdateTemplateFilterSet(filters.FilterSet):
    audience = MultipleValueFilter(help_text="internal, external.")
    public_status = MultipleValueFilter(
        method="filter_public_status", help_text="Templates for these public statuses, and those for any."
    )
    severity = filters.NumberFilter(
        method="filter_severity", help_text="Templates usable at this severity level: its own and those for any."
    )
    active = StrictBooleanFilter(field_name="is_active")

    class Meta:
        model = UpdateTemplate
        fields = ["audience", "public_status", "severity", "active"]

    def filter_public_status(self, queryset, name, value):
        return queryset.filter(Q(public_status__in=value) | Q(public_status="")) if value else queryset

    def filter_severity(self, queryset, name, value):
        return queryset.filter(Q(severity__level=value) | Q(severity__isnull=True))


@extend_schema_view(list=extend_schema(summary="List update templates"))
class UpdateTemplateViewSet(ApiViewMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Templates are edited in the admin; tools read them (by id) to draft from."""

    queryset = UpdateTemplate.objects.select_related("severity")
    serializer_class = UpdateTemplateSerializer
    filterset_class = UpdateTemplateFilterSet


ROUTES = [
    ("updates", UpdateViewSet, "update"),
    ("update-templates", UpdateTemplateViewSet, "update-template"),
]
