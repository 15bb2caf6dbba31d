"""Scenario: the monitoring files under contrib/ drop into a Prometheus + Grafana set-up.

Goal: `promtool check rules` accepts contrib/prometheus/tunneld-alerts.yml, and every tunneld
metric that the alert rules and the Grafana dashboard (contrib/grafana/tunneld-dashboard.json)
query is one a real tunneld serves on /metrics, with a redis service whose new side is a replica
reached through an SSH tunnel (so the lag, link and tunnel families all have samples); a
histogram's _bucket, _sum and _count series count as served when its family is. A renamed
metric breaks this test instead of silently blanking a panel or an alert.
"""

import http.client
import json
import re
import subprocess
import unittest
from pathlib import Path

from integration_support import IntegrationTest, daemon_config, service_config, tb

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
RULES = CONTRIB / "prometheus" / "tunneld-alerts.yml"
DASHBOARD = CONTRIB / "grafana" / "tunneld-dashboard.json"
METRIC = re.compile(r"\btunneld_[a-z_]+\b")


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    expressions += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return expressions


class ContribMonitoringTest(IntegrationTest):
    def test_1_promtool_accepts_the_alert_rules(self):
        check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                               text=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.assertRegex(check.stdout, r"SUCCESS: \d+ rules found")

    def test_2_every_queried_metric_is_served(self):
        queried = set(METRIC.findall(RULES.read_text()))
        for expression in dashboard_expressions():
            queried |= set(METRIC.findall(expression))
        self.assertGreaterEqual(len(queried), 15, queried)

        old = self.bed.redis("old")
        new = self.bed.redis("new", replicaof=old)
        new.wait_link_up()
        sshd = self.bed.sshd()
        health_port, port = tb.free_port(), tb.free_port()
        tunnels = {"gateway": {"address": f"{tb.HOST}:{sshd.port}", "user": sshd.user,
                               "identity": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
                               "sessions": 1, "keepalive": "1s"}}
        service = service_config(port, old.port, {"address": f"{tb.HOST}:{new.port}", "via": "gateway"},
                                 kind="redis", max_lag="1MiB", probe_interval="200ms")
        daemon = self.bed.tunneld(daemon_config({"redis": service}, tunnels=tunnels,
                                                health_listen=f"{tb.HOST}:{health_port}"))
        # Traffic through both the direct and the tunnel path, so every family has a sample.
        with tb.RespClient(port) as client:
            self.assertEqual(client.command("SET", "k", "v"), "OK")

        def served() -> set[str]:
            connection = http.client.HTTPConnection(tb.HOST, health_port, timeout=10)
            try:
                connection.request("GET", "/metrics")
                body = connection.getresponse().read().decode()
            finally:
                connection.close()
            names = set()
            for name, kind in re.findall(r"^# TYPE (tunneld_[a-z_]+) ([a-z]+)$", body, re.M):
                names.add(name)
                if kind == "histogram":  # queried through its series
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            return names

        missing: set[str] = set()

        def all_served() -> bool:
            nonlocal missing
            missing = queried - served()
            return not missing

        try:
            self.eventually(all_served, 20, "every metric the rules and dashboard query is served")
        except AssertionError:
            self.fail(f"queried but not served: {sorted(missing)}\n{daemon.log_text()[-2000:]}")

if __name__ == "__main__":
    unittest.main()
