"""Customer accounts: kept in sync from the CRM (one upsert per account), by CSV or the API.

An account's CSV rows share its external id; each row may add one contact, so an account with three
contacts is three rows. The whole file is checked before anything is written: a file with an error
in any row changes nothing.
"""

import csv
import io
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from .models import Account, AccountContact, AccountTier, CustomerReport, Service
from .services import IncidentError

CSV_COLUMNS = (
    "external_id",
    "name",
    "tier",
    "annual_contract_value",
    "currency",
    "services",
    "contact_name",
    "contact_email",
    "contact_role",
    "contact_incident_emails",
)
REQUIRED_COLUMNS = ("external_id", "name", "tier")
CSV_MAX_ROWS = 20000
TRUE_WORDS = {"1", "true", "yes", "y"}
FALSE_WORDS = {"", "0", "false", "no", "n"}


class AccountError(IncidentError):
    """An account change the rules refuse; the message is for the person (or tool) who sent it."""


@dataclass
class AccountData:
    """One account as the CRM describes it (everything it has: fields left out are emptied)."""

    external_id: str
    name: str
    tier: AccountTier
    annual_contract_value: Decimal = Decimal("0")
    currency: str = "USD"
    services: list = field(default_factory=list)
    contacts: list = field(default_factory=list)  # [{"name", "email", "role", "incident_emails"}]


def currency_clean(value):
    value = (value or "USD").strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", value):
        raise AccountError("A currency is a three-letter ISO 4217 code, e.g. EUR.")
    return value


def contacts_check(contacts):
    """Lower-cased addresses, each once per account; raises AccountError naming the bad one."""
    seen, clean = set(), []
    for contact in contacts:
        email = (contact.get("email") or "").strip().lower()
        try:
            validate_email(email)
        except ValidationError:
            raise AccountError(f"{email or 'An empty address'} is not a valid e-mail address.") from None
        if email in seen:
            raise AccountError(f"{email} is listed twice.")
        seen.add(email)
        clean.append({**contact, "email": email})
    return clean


@transaction.atomic
def account_upsert(*, data):
    """Create the account, or make it exactly what `data` says (contacts and services replaced).

    Returns (account, created). Sending the same data again changes nothing.
    """
    if not data.external_id.strip():
        raise AccountError("An account needs its external id.")
    if not data.name.strip():
        raise AccountError("An account needs a name.")
    if data.annual_contract_value < 0:
        raise AccountError("The annual contract value cannot be negative.")
    contacts = contacts_check(data.contacts)
    account, created = Account.objects.select_for_update().get_or_create(
        external_id=data.external_id.strip(),
        defaults={"name": data.name.strip(), "tier": data.tier},
    )
    account.name = data.name.strip()
    account.tier = data.tier
    account.annual_contract_value = data.annual_contract_value
    account.currency = currency_clean(data.currency)
    account.save()
    account.services.set(data.services)
    if created:  # reports that named this customer before the CRM sent the account now count for it
        CustomerReport.objects.filter(customer_id=account.external_id, account__isnull=True).update(account=account)
    kept = {c["email"] for c in contacts}
    account.contacts.exclude(email__in=kept).delete()
    for contact in contacts:
        AccountContact.objects.update_or_create(
            account=account,
            email=contact["email"],
            defaults={
                "name": (contact.get("name") or "").strip(),
                "role": (contact.get("role") or "").strip(),
                "incident_emails": bool(contact.get("incident_emails")),
            },
        )
    return account, created


# ---- CSV import: parse and check everything, then apply all or nothing ----


@dataclass
class ImportPlan:
    """What a CSV file would do: accounts to create or change, and the errors by line."""

    accounts: list  # [AccountData]
    errors: list  # [(line number, message)]
    new: int = 0
    changed: int = 0
    unchanged: int = 0

    @property
    def ok(self):
        return not self.errors and bool(self.accounts)


def _bool_cell(value, line):
    word = (value or "").strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise AccountError(f"contact_incident_emails must be yes or no, not {value!r}.")


def _decimal_cell(value):
    text = (value or "0").strip().replace(",", "").replace("_", "") or "0"
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise AccountError(f"annual_contract_value must be a number, not {value!r}.") from None
    if not amount.is_finite() or amount < 0 or amount >= Decimal("1e12"):
        raise AccountError(f"annual_contract_value must be between 0 and 999,999,999,999.99, not {value!r}.")
    return amount.quantize(Decimal("0.01"))


def _same(account, data):
    """Whether the stored account already is what the CSV says (for the preview's counts)."""
    if (account.name, account.tier_id, account.annual_contract_value, account.currency) != (
        data.name,
        data.tier.pk,
        data.annual_contract_value,
        data.currency,
    ):
        return False
    if {s.pk for s in account.services.all()} != {s.pk for s in data.services}:
        return False
    stored = {(c.email, c.name, c.role, c.incident_emails) for c in account.contacts.all()}
    wanted = {(c["email"], c["name"], c["role"], c["incident_emails"]) for c in data.contacts}
    return stored == wanted


def accounts_csv_plan(text):
    """Read a CSV export (header row with CSV_COLUMNS; external_id, name, tier required) and check
    every row against the tiers, services and the rules. Nothing is written."""
    tiers = {t.slug: t for t in AccountTier.objects.all()}
    services = {s.slug: s for s in Service.objects.all()}
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        return ImportPlan(accounts=[], errors=[(1, f"The header row lacks {', '.join(missing)}.")])
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        return ImportPlan(accounts=[], errors=[(1, f"Unknown columns: {', '.join(unknown)}.")])
    reader.fieldnames = header
    by_id, errors = {}, []
    try:
        for line, row in enumerate(reader, start=2):
            if line - 1 > CSV_MAX_ROWS:
                errors.append((line, f"A file may have at most {CSV_MAX_ROWS:,} rows; split it."))
                break
            try:
                _plan_row(row, by_id, tiers, services)
            except AccountError as error:
                errors.append((line, str(error)))
    except csv.Error as error:
        errors.append((reader.line_num, f"This is not a readable CSV file: {error}."))
    accounts = list(by_id.values())
    for data in accounts:
        try:
            data.contacts = contacts_check(data.contacts)
        except AccountError as error:
            errors.append((0, f"{data.external_id}: {error}"))
    plan = ImportPlan(accounts=accounts, errors=errors)
    if not accounts and not errors:
        plan.errors.append((2, "The file has no accounts."))
    existing = Account.objects.filter(external_id__in=[a.external_id for a in accounts]).prefetch_related(
        "services", "contacts"
    )
    stored = {a.external_id: a for a in existing}
    for data in accounts:
        account = stored.get(data.external_id)
        if account is None:
            plan.new += 1
        elif _same(account, data):
            plan.unchanged += 1
        else:
            plan.changed += 1
    return plan


def _plan_row(row, by_id, tiers, services):
    if None in row:
        raise AccountError("This row has more cells than the header.")
    cells = {k: (v or "").strip() for k, v in row.items()}
    external_id = cells.get("external_id", "")
    if not external_id:
        raise AccountError("external_id is empty.")
    if len(external_id) > 200 or len(cells.get("name", "")) > 200:
        raise AccountError("external_id and name are at most 200 characters.")
    tier = tiers.get(cells.get("tier", ""))
    if tier is None:
        raise AccountError(f"Unknown tier {cells.get('tier')!r}; known: {', '.join(sorted(tiers))}.")
    slugs = [s for s in re.split(r"[;,\s]+", cells.get("services", "")) if s]
    unknown = [s for s in slugs if s not in services]
    if unknown:
        raise AccountError(f"Unknown services: {', '.join(unknown)}.")
    data = AccountData(
        external_id=external_id,
        name=cells.get("name", ""),
        tier=tier,
        annual_contract_value=_decimal_cell(cells.get("annual_contract_value")),
        currency=currency_clean(cells.get("currency")),
        services=[services[s] for s in dict.fromkeys(slugs)],
    )
    if not data.name:
        raise AccountError("name is empty.")
    first = by_id.setdefault(external_id, data)
    if first is not data:  # another contact row of an account already read: its fields must agree
        if (first.name, first.tier, first.annual_contract_value, first.currency) != (
            data.name,
            data.tier,
            data.annual_contract_value,
            data.currency,
        ):
            raise AccountError(f"This row describes {external_id} differently from its first row.")
        first.services = list(dict.fromkeys([*first.services, *data.services]))
    if cells.get("contact_email") or cells.get("contact_name"):
        first.contacts.append(
            {
                "name": cells.get("contact_name", "")[:200],
                "email": cells.get("contact_email", ""),
                "role": cells.get("contact_role", "")[:100],
                "incident_emails": _bool_cell(cells.get("contact_incident_emails"), None),
            }
        )


@transaction.atomic
def accounts_import(*, plan):
    """Apply a checked plan, all or nothing. Returns (created, updated)."""
    if plan.errors:
        raise AccountError("The file has errors; nothing was imported.")
    created = updated = 0
    for data in plan.accounts:
        _account, was_created = account_upsert(data=data)
        created += was_created
        updated += not was_created
    return created, updated
