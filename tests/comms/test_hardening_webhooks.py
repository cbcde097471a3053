"""Issue 11: outbound webhooks have a total deadline per delivery, and IPv6 forms of private IPv4
addresses (6to4, Teredo, NAT64) are refused like the addresses themselves."""

import ipaddress
import socket
import threading
import time

import pytest

from comms import webhooks


def _teredo(server, client):
    """A Teredo address (RFC 4380): 2001:0::/32, the server, flags and port, and the client obfuscated."""
    value = (0x20010000 << 96) | (int(ipaddress.IPv4Address(server)) << 64)
    value |= 0xFFFF << 32  # obfuscated port
    value |= int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address(value))


@pytest.mark.parametrize(
    "address",
    [
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254 (cloud metadata)
        _teredo("65.54.227.120", "192.168.1.10"),
        _teredo("65.54.227.120", "127.0.0.1"),
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::c0a8:101",  # NAT64 of 192.168.1.1
        "64:ff9b:1::a00:1",  # local-use NAT64
        "::ffff:10.1.2.3",  # IPv4-mapped (as before)
    ],
)
def test_ipv6_forms_of_private_addresses_are_refused(address):
    assert webhooks.address_refusal(address) is not None
    with pytest.raises(webhooks.DestinationRefused):
        webhooks.destination_check(f"https://[{address}]/hook")


@pytest.mark.parametrize("address", ["2002:808:808::1", "64:ff9b::808:808", "2606:4700::1111", "8.8.8.8"])
def test_their_public_counterparts_are_allowed(address):
    assert webhooks.address_refusal(address) is None


class DribblingReceiver:
    """Answers a POST with a status line and then one byte every `interval` seconds, `total` bytes at most."""

    def __init__(self, interval=0.3, total=100):
        self.interval, self.total, self.sent, self.cut_off = interval, total, 0, False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server.getsockname()[1]

    def _serve(self):
        try:
            connection, _ = self.server.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(10)
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            for _ in range(self.total):
                time.sleep(self.interval)
                try:
                    connection.sendall(b"x")
                except OSError:
                    self.cut_off = True
                    return
                self.sent += 1

    def close(self):
        self.server.close()
        self.thread.join(timeout=60)


def test_a_receiver_that_dribbles_its_answer_is_cut_off_at_the_deadline():
    receiver = DribblingReceiver(interval=0.3, total=100)  # each read gets a byte well within the timeout
    try:
        destination = webhooks.Destination("http", "127.0.0.1", receiver.port, "/hook", ("127.0.0.1",))
        with pytest.raises(TimeoutError):
            webhooks.destination_post(destination, b"{}", {"Content-Type": "application/json"}, timeout=2)
    finally:
        receiver.close()
    # Before, the per-read timeout never fired and the worker waited for all 100 bytes (30 s here, minutes
    # for a patient attacker); now the connection is closed when the delivery's time is up.
    assert receiver.sent < receiver.total and receiver.cut_off


def test_a_prompt_receiver_is_unaffected():
    server = socket.create_server(("127.0.0.1", 0))

    def answer():
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        destination = webhooks.Destination("http", "127.0.0.1", server.getsockname()[1], "/", ("127.0.0.1",))
        assert webhooks.destination_post(destination, b"{}", {}, timeout=5)[0] == 204
    finally:
        thread.join(timeout=10)
        server.close()
