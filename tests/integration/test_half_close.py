"""Scenario 13: half-close.

Goal: a client that sends its request and then shuts down its write side still receives the
whole reply. The backend replies only after it has seen EOF, so the client's FIN must travel
through tunneld and the reply must come back through the half-closed connection.
"""

import os
import socket
import unittest

from integration_support import IntegrationTest, tb


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection((tb.HOST, port), timeout=20) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)


class HalfCloseTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old = self.bed.echo_server(b"old:", mode="after_eof")
        self.new = self.bed.echo_server(b"new:", mode="after_eof")
        self.daemon, self.port = self.start_tcp_service(self.old.port, self.new.port)

    def test_13a_small_request_then_shutdown_write_gets_full_reply(self):
        self.assertEqual(exchange(self.port, b"hello"), b"old:hello")

    def test_13b_large_request_then_shutdown_write_gets_full_reply(self):
        payload = os.urandom(1 << 20)
        self.assertEqual(exchange(self.port, payload), b"old:" + payload)


if __name__ == "__main__":
    unittest.main()
