"""Scenario 7: the state file.

Goal: a restarted tunneld keeps the switched side (it never silently reverts), and a corrupt
state file makes tunneld exit non-zero with a message that names the state file.
"""

import json
import unittest

from integration_support import SERVICE, IntegrationTest, tb


class RestartStateTest(IntegrationTest):
    def test_7a_restart_keeps_switched_side(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port)
        self.ctl_ok(daemon, "switch", SERVICE, "--mode", "kill")
        self.assertTrue(daemon.state_file.exists(), "switch reported done before the state file")
        json.loads(daemon.state_file.read_text())

        daemon.restart()
        self.assertEqual(daemon.service(SERVICE)["active"], "new")
        self.assertEqual(tb.whoami(port), "new")

    def test_7b_corrupt_state_file_makes_tunneld_exit_nonzero_with_clear_message(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port)
        self.ctl_ok(daemon, "switch", SERVICE, "--mode", "kill")
        self.assertEqual(daemon.sigterm(timeout=30), 0)

        daemon.state_file.write_text('{"services": {"svc": {"active": ')
        daemon.start(wait=False)
        code = daemon.wait_exit(timeout=20)
        self.assertNotEqual(code, 0)
        log = daemon.log_text().split("starting tunneld")[-1]
        self.assertIn(daemon.state_file.name, log, "the message must name the state file")


if __name__ == "__main__":
    unittest.main()
