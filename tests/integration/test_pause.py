"""Scenario 3: pause and resume.

Goal: `tunnelctl pause svc --timeout 10s` holds new clients: a client connecting while paused
gets no answer to its PING; `tunnelctl resume svc` releases it and it is answered by the
active side. The held time is printed.
"""

import socket
import time
import unittest

from integration_support import SERVICE, IntegrationTest, tb


class PauseTest(IntegrationTest):
    def test_3_paused_client_is_held_until_resume_then_answered(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port)
        self.ctl_ok(daemon, "pause", SERVICE, "--timeout", "10s")
        self.assertEqual(daemon.service(SERVICE)["state"], "paused")

        client = tb.RespClient(port, timeout=10)
        self.addCleanup(client.close)
        sent = time.monotonic()
        client.send("PING")
        client.sock.settimeout(1.0)
        with self.assertRaises(socket.timeout, msg="a paused service must not answer"):
            client.read_reply()
        self.eventually(lambda: daemon.service(SERVICE)["held"] >= 1, 5,
                        "status counts the held client")

        self.ctl_ok(daemon, "resume", SERVICE)
        client.sock.settimeout(10)
        self.assertEqual(client.read_reply(), "PONG")
        held = time.monotonic() - sent
        print(f"\n  client held {held:.2f}s (resumed after ~1s)")
        self.assertEqual(client.command("GET", "whoami"), "old")
        svc = daemon.service(SERVICE)
        self.assertEqual(svc["state"], "serving")
        self.assertEqual(svc["active"], "old")


if __name__ == "__main__":
    unittest.main()
