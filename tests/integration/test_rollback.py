"""Scenario 5: rollback.

Goal: after a switch to new, `tunnelctl rollback svc` exits 0 and new clients reach old again.
"""

import unittest

from integration_support import SERVICE, IntegrationTest, tb


class RollbackTest(IntegrationTest):
    def test_5_rollback_brings_new_clients_back_to_old(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port)
        self.ctl_ok(daemon, "switch", SERVICE, "--mode", "kill")
        self.assertEqual(tb.whoami(port), "new")

        self.ctl_ok(daemon, "rollback", SERVICE)
        self.assertEqual(daemon.service(SERVICE)["active"], "old")
        for _ in range(5):
            self.assertEqual(tb.whoami(port), "old")


if __name__ == "__main__":
    unittest.main()
