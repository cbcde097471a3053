"""A real SMTP server for the fan-out benchmark (aiosmtpd, from PyPI): accepts every message and
records, per message, its recipients, its Message-ID and the TCP connection it came on.

    .venv/bin/python bench/fanout/smtp_sink.py --port 0 --ready FILE --out FILE [--seconds 1800]

Binds 127.0.0.1 (port 0: a free one), writes the port to --ready once it listens, and on SIGTERM (or
after --seconds, so it never outlives a run) writes to --out a JSON summary: messages, recipients
(with how often each was seen), connections, and the messages per connection.
"""

import argparse
import asyncio
import itertools
import json
import re
import signal
from collections import Counter
from pathlib import Path

from aiosmtpd.smtp import SMTP

MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)", re.IGNORECASE | re.MULTILINE)


class Recorder:
    def __init__(self):
        self.recipients = Counter()
        self.message_ids = Counter()
        self.per_connection = Counter()
        self.messages = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages += 1
        self.per_connection[server.connection_number] += 1
        for recipient in envelope.rcpt_tos:
            self.recipients[recipient.lower()] += 1
        match = MESSAGE_ID.search(envelope.original_content or envelope.content or b"")
        if match:
            self.message_ids[match[1].decode(errors="replace")] += 1
        return "250 Message accepted for delivery"

    def summary(self):
        per_connection = sorted(self.per_connection.values())
        return {
            "messages": self.messages,
            "recipients": len(self.recipients),
            "recipients_more_than_once": sum(1 for n in self.recipients.values() if n > 1),
            "message_ids": len(self.message_ids),
            "message_ids_more_than_once": sum(1 for n in self.message_ids.values() if n > 1),
            "connections": len(per_connection),
            "messages_per_connection_min": per_connection[0] if per_connection else 0,
            "messages_per_connection_max": per_connection[-1] if per_connection else 0,
        }


async def serve(args):
    recorder = Recorder()
    loop = asyncio.get_running_loop()
    connections = itertools.count(1)

    def connection():  # one SMTP protocol object per TCP connection: numbered, to count messages per connection
        smtp = SMTP(recorder, hostname="bench-sink.example.com")
        smtp.connection_number = next(connections)
        return smtp

    server = await loop.create_server(connection, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    Path(args.ready).write_text(str(port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), timeout=args.seconds)
    except TimeoutError:
        pass
    server.close()
    Path(args.out).write_text(json.dumps(recorder.summary(), indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready", required=True, help="file the listening port is written to")
    parser.add_argument("--out", required=True, help="file the summary is written to on exit")
    parser.add_argument("--seconds", type=float, default=1800, help="stop by itself after this long")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
