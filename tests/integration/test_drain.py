"""Scenario 2: switch --mode drain.

Goal: a drain switch sends new clients to new while an existing client stays on old and keeps
working; the service shows `draining` meanwhile. With a short drain_timeout the remaining old
client is cut at about the timeout (not before it, not long after).
"""

import time
import unittest

from integration_support import SERVICE, IntegrationTest, answers, tb


class DrainTest(IntegrationTest):
    def test_2a_drain_keeps_existing_client_on_old_and_new_clients_go_to_new(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port, drain_timeout="60s")
        client = tb.RespClient(port)
        self.addCleanup(client.close)
        self.assertEqual(answers(client), "old")

        switch = daemon.ctl_async("switch", SERVICE, "--mode", "drain")
        self.addCleanup(lambda: switch.poll() is None and switch.kill())
        self.eventually(lambda: daemon.service(SERVICE)["active"] == "new", 10,
                        "active side becomes new")
        self.assertEqual(tb.whoami(port), "new")
        for _ in range(3):
            self.assertEqual(answers(client), "old", "existing client keeps working on old")
        svc = daemon.service(SERVICE)
        self.assertEqual(svc["state"], "draining")
        self.assertEqual(svc["connections"]["old"], 1)

        client.close()
        self.eventually(lambda: daemon.service(SERVICE)["state"] == "serving", 10,
                        "draining ends when the last old client leaves")
        out, err = switch.communicate(timeout=30)
        self.assertEqual(switch.returncode, 0, out + err)
        self.assertEqual(tb.whoami(port), "new")

    def test_2b_drain_timeout_cuts_remaining_old_client_at_about_the_timeout(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port, drain_timeout="2s")
        client = tb.RespClient(port)
        self.addCleanup(client.close)
        self.assertEqual(answers(client), "old")

        started = time.monotonic()
        switch = daemon.ctl_async("switch", SERVICE, "--mode", "drain")
        self.addCleanup(lambda: switch.poll() is None and switch.kill())
        self.eventually(lambda: daemon.service(SERVICE)["active"] == "new", 10,
                        "active side becomes new")
        self.assert_closed_within(client, 20, "old client after drain_timeout")
        cut_after = time.monotonic() - started
        print(f"\n  old client cut {cut_after:.2f}s after the drain switch (drain_timeout 2s)")
        self.assertGreaterEqual(cut_after, 1.5, "drain must not cut the old client early")
        self.assertLess(cut_after, 15)
        out, err = switch.communicate(timeout=30)
        self.assertEqual(switch.returncode, 0, out + err)
        self.assertEqual(daemon.service(SERVICE)["connections"]["old"], 0)


if __name__ == "__main__":
    unittest.main()
