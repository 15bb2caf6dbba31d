"""Scenario 10: SIGTERM.

Goal: SIGTERM with a live client stops accepting, lets the client finish up to
shutdown_timeout, then exits 0 (the client is cut at the latest then).
"""

import time
import unittest

from integration_support import IntegrationTest, answers, tb


class SigtermTest(IntegrationTest):
    def test_10_sigterm_with_live_client_exits_zero_within_shutdown_timeout(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port,
                                              daemon_settings={"shutdown_timeout": "2s"})
        client = tb.RespClient(port)
        self.addCleanup(client.close)
        self.assertEqual(answers(client), "old")

        started = time.monotonic()
        daemon.send_signal(15)
        code = daemon.wait_exit(timeout=15)
        took = time.monotonic() - started
        print(f"\n  exited {code} after {took:.2f}s (shutdown_timeout 2s)")
        self.assertEqual(code, 0)
        self.assert_closed_within(client, 5, "client after tunneld exited")
        self.assertFalse(tb.port_open(port), "nobody listens after exit")


if __name__ == "__main__":
    unittest.main()
