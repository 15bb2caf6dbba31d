"""Scenario: the HTTP health endpoint of a running tunneld (`[daemon] health_listen`).

Goal: monitoring can read liveness, readiness, Prometheus metrics and the status JSON from a real
daemon; /metrics passes `promtool check metrics`; /readyz flips to 503 when the active backend
goes away and back to 200 when it returns; 500 idle connections do not stop a fresh request
from being answered.
"""

import http.client
import json
import socket
import subprocess
import unittest

from integration_support import SERVICE, IntegrationTest, tb


class HealthHttpTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old, self.new = self.redis_pair()
        self.health_port = tb.free_port()
        self.daemon, self.port = self.start_tcp_service(
            self.old.port, self.new.port, daemon_settings={"health_listen": f"{tb.HOST}:{self.health_port}"})

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection(tb.HOST, self.health_port, timeout=10)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, headers, response.read().decode()
        finally:
            connection.close()

    def test_1_healthz_is_ok(self):
        status, _, body = self.get("/healthz")
        self.assertEqual((status, body), (200, "ok\n"))

    def test_2_unknown_path_is_404_and_post_is_405(self):
        self.assertEqual(self.get("/nope")[0], 404)
        self.assertEqual(self.get("/healthz", method="POST")[0], 405)

    def test_3_metrics_are_prometheus_text(self):
        status, headers, body = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/plain; version=0.0.4"), headers)
        self.assertIn(f'tunneld_clients_active{{service="{SERVICE}",side="old"}}', body)
        self.assertIn(f'tunneld_service_active_side{{service="{SERVICE}",side="old"}} 1', body)
        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                               text=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr + body)

    def test_4_status_is_the_status_json(self):
        status, headers, body = self.get("/status")
        self.assertEqual(status, 200)
        self.assertIn("application/json", headers["content-type"])
        document = json.loads(body)
        self.assertEqual([s["name"] for s in document["services"]], [SERVICE])
        self.assertEqual(document["services"][0]["active"], "old")

    def test_5_readyz_follows_the_active_backend(self):
        self.eventually(lambda: self.get("/readyz")[0] == 200, 15, "/readyz 200 with both backends up")
        old_port = self.old.port
        self.old.stop()
        status, _, body = self.eventually(
            lambda: (r := self.get("/readyz"))[0] == 503 and r, 30, "/readyz 503 with the old backend gone")
        self.assertIn(SERVICE, body)
        self.bed.redis("old-again", port=old_port)
        self.eventually(lambda: self.get("/readyz")[0] == 200, 30, "/readyz 200 once the old backend is back")

    def test_6_answers_with_500_idle_connections_open(self):
        idle = []
        try:
            for _ in range(500):
                idle.append(socket.create_connection((tb.HOST, self.health_port), timeout=5))
            status, _, body = self.get("/healthz")
            self.assertEqual((status, body), (200, "ok\n"))
            self.assertEqual(self.get("/metrics")[0], 200)
        finally:
            for sock in idle:
                sock.close()


if __name__ == "__main__":
    unittest.main()
