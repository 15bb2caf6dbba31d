"""Scenario 1: switch --mode kill.

Goal: with two real redis-servers behind a kind = "tcp" service, a client first reaches old;
`tunnelctl switch svc --mode kill` exits 0, cuts the existing client at once, and every new
client reaches new. `status --json` carries the contract fields of DESIGN.md.
"""

import json
import unittest

from integration_support import SERVICE, IntegrationTest, answers, tb


class SwitchKillTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old, self.new = self.redis_pair()
        self.daemon, self.port = self.start_tcp_service(self.old.port, self.new.port)

    def test_1a_status_json_reports_contract_fields(self):
        status = self.daemon.status_json()
        self.assertIsInstance(status.get("services"), list, status)
        self.assertIsInstance(status.get("tunnels"), list, status)
        svc = next(s for s in status["services"] if s["name"] == SERVICE)
        self.assertEqual(svc["kind"], "tcp")
        self.assertEqual(svc["listen"], f"127.0.0.1:{self.port}")
        self.assertEqual(svc["active"], "old")
        self.assertEqual(svc["state"], "serving")
        self.assertIn("split_percent", svc)
        self.assertEqual(svc["connections"], {"old": 0, "new": 0})
        self.assertIn("fenced", svc)
        self.assertEqual(set(svc["lag"]), {"bytes", "seconds", "link"}, svc["lag"])
        # kind = "tcp" has no probe: lag is unknown, never reported as zero
        self.assertIsNone(svc["lag"]["bytes"])
        self.assertIsNone(svc["lag"]["seconds"])
        self.assertEqual(svc["lag"]["link"], "unknown")
        # status SERVICE --json narrows to that service
        one = self.daemon.status_json(SERVICE)
        self.assertEqual([s["name"] for s in one["services"]], [SERVICE])

    def test_1b_kill_switch_cuts_existing_client_and_new_clients_reach_new(self):
        client = tb.RespClient(self.port)
        self.addCleanup(client.close)
        self.assertEqual(answers(client), "old")
        self.eventually(lambda: self.service_status(self.daemon)["connections"]["old"] == 1, 5,
                        "status counts the client on old")

        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "kill")

        self.assert_closed_within(client, 5, "client on old after a kill switch")
        self.assertEqual(tb.whoami(self.port), "new")
        svc = self.service_status(self.daemon)
        self.assertEqual(svc["active"], "new")
        self.assertEqual(svc["state"], "serving")
        self.eventually(lambda: self.service_status(self.daemon)["connections"]["old"] == 0, 5,
                        "no connection left on old")

    def test_1c_switch_of_unknown_service_fails_with_reason(self):
        result = self.daemon.ctl("switch", "no-such-service", "--mode", "kill")
        self.assertEqual(result.returncode, 1, result)
        self.assertIn("no-such-service", result.stdout + result.stderr)
        self.assertEqual(tb.whoami(self.port), "old")

    def test_1d_status_human_output_names_service_and_side(self):
        out = self.ctl_ok(self.daemon, "status")
        self.assertIn(SERVICE, out)
        self.assertIn("old", out)
        with self.assertRaises(json.JSONDecodeError):
            json.loads(out)  # without --json the output is for people


if __name__ == "__main__":
    unittest.main()
