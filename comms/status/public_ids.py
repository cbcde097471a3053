"""Opaque public ids for the status page (Statuspage's 12-character ids), reversible without a table.

A row's primary key is encrypted with a small keyed Feistel network over 60 bits and written as 12
lower-case Crockford base-32 characters. The same row always has the same id, ids of different
kinds (incident, update, component, …) never coincide by construction, and an id reveals neither the
primary key nor how many incidents exist (restricted and internal ones included). Decoding gives the
primary key back, so an incident page needs no lookup table.

The key is STATUS_PAGE_ID_KEY (derived from SECRET_KEY when unset): changing it changes every public
id and breaks old links, so production sets it once.
"""

import functools
import hashlib
import hmac

from django.conf import settings

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base 32, lower case
LENGTH = 12
HALF_BITS = 30
HALF_MASK = (1 << HALF_BITS) - 1
ROUNDS = 6
KINDS = ("page", "incident", "update", "component", "group", "maintenance", "maintenance_update")


def _key():
    explicit = getattr(settings, "STATUS_PAGE_ID_KEY", "")
    if explicit:
        return explicit.encode()
    return hashlib.sha256(b"status-page-ids:" + settings.SECRET_KEY.encode()).digest()


def _round(key, kind, index, value):
    message = f"{kind}:{index}:{value}".encode()
    return int.from_bytes(hmac.new(key, message, hashlib.sha256).digest()[:4], "big") & HALF_MASK


def encode(kind, pk):
    """The public id of row `pk` of this kind."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    pk = int(pk)
    if not 0 <= pk < (1 << (2 * HALF_BITS)):
        raise ValueError("primary key out of range")
    return _encrypted(_key(), kind, pk)


# Six HMACs per id, about a thousand ids per status page render: the same rows come back every render.
@functools.lru_cache(maxsize=65536)
def _encrypted(key, kind, pk):
    left, right = pk >> HALF_BITS, pk & HALF_MASK
    for index in range(ROUNDS):
        left, right = right, left ^ _round(key, kind, index, right)
    number = (left << HALF_BITS) | right
    chars = []
    for _ in range(LENGTH):
        number, digit = divmod(number, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def decode(kind, public_id):
    """The primary key behind a public id of this kind, or None when it is not one."""
    if kind not in KINDS or not isinstance(public_id, str) or len(public_id) != LENGTH:
        return None
    number = 0
    for char in public_id:
        digit = ALPHABET.find(char)
        if digit < 0:
            return None
        number = number * 32 + digit
    key = _key()
    left, right = number >> HALF_BITS, number & HALF_MASK
    for index in reversed(range(ROUNDS)):
        left, right = right ^ _round(key, kind, index, left), left
    return (left << HALF_BITS) | right


def page_id():
    return encode("page", 0)
