"""What every e-mail the product sends shares: a Subject that is one line.

Incident titles come from alert summaries, which carry newlines; Django refuses a header with one
(BadHeaderError), so a subject built from a title would fail to send. Every place that builds a
subject passes it through subject_line().
"""

SUBJECT_MAX_CHARS = 200


def subject_line(text):
    """`text` on one line: newlines and runs of whitespace become one space; over 200 characters it is cut."""
    line = " ".join(str(text or "").split())
    return line if len(line) <= SUBJECT_MAX_CHARS else line[: SUBJECT_MAX_CHARS - 1] + "…"
