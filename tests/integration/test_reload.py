"""Scenario 9: SIGHUP reload.

Goal: SIGHUP with a changed old backend address keeps a live client on its connection while
new clients use the new address; an invalid config on SIGHUP (or `tunnelctl reload`) keeps
the daemon serving with the config it had.
"""

import signal
import time
import unittest

from integration_support import SERVICE, IntegrationTest, answers, daemon_config, \
    service_config, tb


class ReloadTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old, self.new = self.redis_pair()
        self.port = tb.free_port()
        self.daemon = self.bed.tunneld(self.config(self.old.port))

    def config(self, old_port: int) -> dict:
        return daemon_config({SERVICE: service_config(self.port, old_port, self.new.port)})

    def test_9a_sighup_with_changed_backend_keeps_live_client_and_routes_new_clients(self):
        client = tb.RespClient(self.port)
        self.addCleanup(client.close)
        self.assertEqual(answers(client), "old")
        moved = self.bed.redis("old-moved")
        moved.cli("SET", "whoami", "old-moved")

        self.daemon.write_config(self.config(moved.port))
        self.daemon.sighup()
        self.eventually(lambda: tb.whoami(self.port) == "old-moved", 10,
                        "new clients reach the reloaded old address")
        self.assertEqual(answers(client), "old", "the live client keeps its connection")
        svc = self.daemon.service(SERVICE)
        self.assertEqual(svc["old"]["address"], f"127.0.0.1:{moved.port}")

    def test_9b_invalid_config_on_sighup_keeps_serving(self):
        client = tb.RespClient(self.port)
        self.addCleanup(client.close)
        self.assertEqual(answers(client), "old")
        self.daemon.write_config(self.daemon.config_text + "\nbogus_key = 1\n[services.svc\n")
        self.daemon.sighup()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:  # the reload happens somewhere in this window
            self.assertTrue(self.daemon.running(), "tunneld died on an invalid config")
            self.assertEqual(tb.whoami(self.port), "old")
            time.sleep(0.2)
        self.assertEqual(answers(client), "old")
        self.assertEqual(self.daemon.service(SERVICE)["active"], "old")

    def test_9c_tunnelctl_reload_with_invalid_config_fails_and_keeps_serving(self):
        self.daemon.write_config(self.daemon.config_text.replace('kind = "tcp"',
                                                                 'kind = "carrier-pigeon"'))
        result = self.daemon.ctl("reload")
        self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertTrue(self.daemon.running())
        self.assertEqual(tb.whoami(self.port), "old")


if __name__ == "__main__":
    unittest.main()
