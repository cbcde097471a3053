"""`/incident …`: the text after the command, parsed into (name, arguments)."""

import re
from dataclasses import dataclass

from incidents.models import RoleAssignment

Role = RoleAssignment.Role

HELP = """*`/incident` commands*
• `/incident declare <title>` – declare an incident (a form opens: title, severity, services, restricted)
In an incident's channel:
• `/incident ack` – acknowledge it
• `/incident status` – where it stands
• `/incident sev <level>` – change its severity (e.g. `sev 2`)
• `/incident lead` – take command
• `/incident role <role> @someone` – give a role: commander, tech, comms, scribe, expert
• `/incident note <text>` – add a note to the timeline (or start a message with `note:`, or pin it with 📌)
• `/incident update <text>` – draft an internal update and submit it for review
• `/incident mitigated`, `/incident resolved` – move it on
• `/incident help` – this list"""

ROLE_NAMES = {
    "commander": Role.COMMANDER,
    "ic": Role.COMMANDER,
    "lead": Role.COMMANDER,
    "tech": Role.TECHNICAL_LEAD,
    "technical_lead": Role.TECHNICAL_LEAD,
    "tech_lead": Role.TECHNICAL_LEAD,
    "comms": Role.COMMUNICATIONS_LEAD,
    "communications_lead": Role.COMMUNICATIONS_LEAD,
    "comms_lead": Role.COMMUNICATIONS_LEAD,
    "scribe": Role.SCRIBE,
    "expert": Role.EXPERT,
    "sme": Role.EXPERT,
}
# An escaped user mention (the slash command is registered with should_escape): <@U123ABC|rita> or <@U123ABC>.
MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
NAMES = ("declare", "ack", "status", "sev", "lead", "role", "note", "update", "mitigated", "resolved", "help")
ALIASES = {"acknowledge": "ack", "severity": "sev", "mitigate": "mitigated", "resolve": "resolved"}


class CommandError(Exception):
    """The text is not a command we understand; the message says what would be."""


@dataclass(frozen=True)
class Command:
    name: str
    text: str = ""  # declare, note, update
    level: int | None = None  # sev
    role: str | None = None  # role
    slack_user_id: str | None = None  # role


def command_parse(text):
    text = (text or "").strip()
    if not text:
        return Command("help")
    word, _, rest = text.partition(" ")
    name = ALIASES.get(word.lower(), word.lower())
    rest = rest.strip()
    if name not in NAMES:
        raise CommandError(f"Unknown command `{word}`. Try `/incident help`.")
    if name in ("declare", "note", "update"):
        if not rest and name != "declare":
            raise CommandError(f"`/incident {name}` needs some text, e.g. `/incident {name} Rolled back the deploy`.")
        return Command(name, text=rest)
    if name == "sev":
        level = rest.upper().removeprefix("SEV")
        if not level.isdigit():
            raise CommandError("Say which severity level, e.g. `/incident sev 2`.")
        return Command(name, level=int(level))
    if name == "role":
        parts = rest.split()
        if len(parts) != 2 or parts[0].lower() not in ROLE_NAMES or not MENTION.match(parts[1]):
            raise CommandError(
                "Use `/incident role <role> @someone` with a role among commander, tech, comms, scribe, expert."
            )
        return Command(name, role=ROLE_NAMES[parts[0].lower()].value, slack_user_id=MENTION.match(parts[1])[1])
    if rest:
        raise CommandError(f"`/incident {name}` takes no arguments. Try `/incident help`.")
    return Command(name)
