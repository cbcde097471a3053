"""The fan-out's fast path over SMTP: an update's subscriber e-mail turned into raw bytes once, and
each subscriber's copy made by substituting what differs between them.

Building a MIME message costs more than sending it (templates, header folding, encoding: about 3 ms
of the 4 a delivery took). Subscriber e-mails of one update differ only in the recipient's address,
the Message-ID and the unsubscribe link, so: render the messages of two subscribers the usual way,
replace those three values by tokens in both, and merge only when the two are then identical (the
templates used nothing else of the recipient) and neither mentions its recipient's address anywhere
else. The bytes are made once; a copy is the bytes with the tokens replaced. Anything that would need
encoding (a non-ASCII address, a link with characters HTML escapes, a body sent quoted-printable) is
not merged: those messages are built the usual way, so the result is always the message Django
would have sent (tests compare them).
"""

import copy
import re

from django.conf import settings
from django.core.mail.message import sanitize_address

ADDRESS = "merge-recipient@merge.invalid"
MESSAGE_ID = "merge-message-id@merge.invalid"
UNSUBSCRIBE = "https://merge.invalid/merge-unsubscribe/"
# An address that goes into the To header as it is (no display name, quoting or encoding needed).
PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")
PLAIN_URL = re.compile(r"[A-Za-z0-9:/?#\[\]@!$()*+,;=._~%-]+")  # ASCII, nothing HTML escapes, no spaces


class Recipient:
    """What differs between two subscribers' copies of the same e-mail."""

    def __init__(self, *, address, message_id, unsubscribe_url):
        self.address, self.message_id, self.unsubscribe_url = address, message_id, unsubscribe_url

    def mergeable(self):
        return bool(
            PLAIN_ADDRESS.fullmatch(self.address)
            and PLAIN_ADDRESS.fullmatch(self.message_id)
            and (self.unsubscribe_url is None or PLAIN_URL.fullmatch(self.unsubscribe_url))
        )


def _tokenised(message, recipient):
    """A copy of the EmailMessage with the recipient's values replaced by tokens, or None if they are
    not where expected (then it cannot be merged)."""
    headers = dict(message.extra_headers)
    if list(message.to) != [recipient.address] or message.cc or message.bcc or message.attachments:
        return None
    if headers.get("Message-ID") != f"<{recipient.message_id}>":
        return None
    headers["Message-ID"] = f"<{MESSAGE_ID}>"
    url = recipient.unsubscribe_url

    def swap(text):
        return text.replace(url, UNSUBSCRIBE) if url else text

    if "List-Unsubscribe" in headers:
        headers["List-Unsubscribe"] = swap(headers["List-Unsubscribe"])
    clone = copy.copy(message)
    clone.to, clone.extra_headers, clone.body = [ADDRESS], headers, swap(message.body)
    clone.alternatives = [type(a)(swap(a.content), a.mimetype) for a in getattr(message, "alternatives", [])]
    texts = [clone.subject, clone.body, *(a.content for a in clone.alternatives), *map(str, headers.values())]
    if any(recipient.address.lower() in text.lower() for text in texts):
        return None  # the address is written somewhere else: each copy is built on its own
    return clone


def _fields(message):
    return (
        message.subject,
        message.body,
        [tuple(a) for a in getattr(message, "alternatives", [])],
        message.extra_headers,
        message.from_email,
        list(message.reply_to),
    )


class MergedMessage:
    """The bytes of one e-mail with tokens where each recipient's values go."""

    def __init__(self, message, data):
        self.from_email = sanitize_address(message.from_email, message.encoding or settings.DEFAULT_CHARSET)
        self.data = data

    @classmethod
    def build(cls, first, first_recipient, second, second_recipient):
        """From two recipients' messages (EmailMessages built the usual way): a MergedMessage, or None
        when these e-mails cannot be merged safely."""
        if not (first_recipient.mergeable() and second_recipient.mergeable()):
            return None
        one, two = _tokenised(first, first_recipient), _tokenised(second, second_recipient)
        if one is None or two is None or _fields(one) != _fields(two):
            return None
        data = one.message().as_bytes(linesep="\r\n")
        lowered = data.lower()
        if b"content-transfer-encoding: quoted-printable" in lowered or b"content-transfer-encoding: base64" in lowered:
            return None  # a token inside an encoded body cannot be replaced
        expected_links = sum(text.count(UNSUBSCRIBE) for text in (one.body, *(a.content for a in one.alternatives)))
        expected_links += one.extra_headers.get("List-Unsubscribe", "").count(UNSUBSCRIBE)
        if data.count(ADDRESS.encode()) != 1 or data.count(MESSAGE_ID.encode()) != 1:
            return None
        if data.count(UNSUBSCRIBE.encode()) != expected_links:
            return None
        return cls(one, data)

    def bytes_for(self, recipient):
        """This recipient's copy, or None when it must be built the usual way."""
        if not recipient.mergeable():
            return None
        data = self.data.replace(ADDRESS.encode(), recipient.address.encode(), 1)
        data = data.replace(MESSAGE_ID.encode(), recipient.message_id.encode(), 1)
        if recipient.unsubscribe_url:
            data = data.replace(UNSUBSCRIBE.encode(), recipient.unsubscribe_url.encode())
        elif UNSUBSCRIBE.encode() in data:
            return None
        return data
