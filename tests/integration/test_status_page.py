"""Scenario: the live status page at GET / in a real browser (headless Chromium).

Goal: what an operator watching a cutover checks on the page is there and follows the daemon
without a reload. A tunneld with a redis service (new = a replica of old, reached through an SSH
tunnel) serves the page; Chromium (Debian's chromium + chromedriver, driven by Debian's
python3-selenium) loads it and sees the service row (kind, side old, the clients connected now,
link up), the tunnel row with its sessions up; then `tunnelctl switch redis` runs and, without
the page being reloaded (a marker set in the page survives), the row shows side new and the old
backend fenced and the switch history lists the switch with its operator. The lag graph is
drawn from the daemon's history of the last minutes. Screenshots before and after go next to
the test log (build/<preset>/Testing/Temporary/) and their paths are printed.
"""

import os
import time
import unittest
from pathlib import Path

from integration_support import IntegrationTest, daemon_config, service_config, tb

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

SERVICE = "redis"


def artifacts_dir() -> Path:
    """Beside ctest's log when run by ctest, else the current directory."""
    if os.environ.get("TUNNELD_BIN"):
        path = Path(os.environ["TUNNELD_BIN"]).resolve().parents[1] / "Testing" / "Temporary"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path.cwd()


def start_browser(scratch: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # Root needs --no-sandbox; the rest keeps Chromium off a network this machine does not have.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1440,900",
                 f"--user-data-dir={scratch}"):
        options.add_argument(flag)
    service = Service("/usr/bin/chromedriver", log_output=str(scratch / "chromedriver.log"))
    return webdriver.Chrome(service=service, options=options)


class StatusPageTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old = self.bed.redis("old")
        self.new = self.bed.redis("new", replicaof=self.old)
        sshd = self.bed.sshd()
        self.health_port, self.port = tb.free_port(), tb.free_port()
        tunnels = {"vpc": {"address": f"{tb.HOST}:{sshd.port}", "user": sshd.user,
                           "identity": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
                           "sessions": 2, "keepalive": "1s"}}
        settings = {"max_lag": "1MiB", "pause_timeout": "5s", "probe_interval": "200ms",
                    "fence": "replicaof", "fence_replicaof": f"{tb.HOST}:{self.new.port}"}
        service = service_config(self.port, self.old.port,
                                 {"address": f"{tb.HOST}:{self.new.port}", "via": "vpc"},
                                 kind="redis", **settings)
        self.daemon = self.bed.tunneld(daemon_config({SERVICE: service}, tunnels=tunnels,
                                                     health_listen=f"{tb.HOST}:{self.health_port}"))
        self.browser = start_browser(self.bed.subdir("chromium"))
        self.addCleanup(self.browser.quit)

    def cell(self, css: str) -> str:
        return self.browser.find_element(By.CSS_SELECTOR, css).text

    def row(self) -> str:
        return f'#services tr[data-service="{SERVICE}"]'

    def screenshot(self, name: str) -> Path:
        path = artifacts_dir() / f"status_page_{name}.png"
        self.assertTrue(self.browser.save_screenshot(str(path)), path)
        print(f"\nscreenshot: {path}", flush=True)
        return path

    def test_1_page_shows_the_service_and_follows_a_switch_without_reload(self):
        clients = [tb.RespClient(self.port) for _ in range(3)]
        for c in clients:
            self.assertEqual(c.command("PING"), "PONG")
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 20,
                        "probe sees the replica's link up")

        self.browser.get(f"http://{tb.HOST}:{self.health_port}/")
        self.assertEqual(self.browser.title, "tunneld")
        row = self.row()
        self.eventually(lambda: self.browser.find_elements(By.CSS_SELECTOR, row), 15,
                        "the page lists the redis service")
        self.eventually(lambda: self.cell(f"{row} td.active") == "old", 10, "side old on the page")
        self.eventually(lambda: self.cell(f"{row} td.clients-old") == "3", 10,
                        "3 clients on old on the page")
        self.eventually(lambda: self.cell(f"{row} td.link-up") == "up", 10, "link up on the page")
        self.assertIn("redis", self.cell(row))
        self.eventually(lambda: "2 / 2" in self.cell('#tunnels tr[data-tunnel="vpc"]'), 15,
                        "the tunnel row shows 2 of 2 sessions up")
        self.assertIn("live", self.cell("#live"))
        self.eventually(lambda: self.browser.find_elements(By.CSS_SELECTOR, f"{row} svg.spark path"), 15,
                        "the lag graph of the last minutes is drawn")
        self.screenshot("before_switch")

        self.browser.execute_script("window.__not_reloaded = 42;")
        result = self.daemon.ctl("switch", SERVICE, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

        self.eventually(lambda: self.cell(f"{row} td.active") == "new", 10, "side new on the page")
        self.eventually(lambda: self.cell(f"{row} td.fenced-yes") == "yes", 10,
                        "old fenced on the page")
        self.eventually(lambda: "switch" in (h := self.cell("#history tbody")) and "done" in h
                        and "root (0)" in h, 10, "the switch in the page's history, with its operator")
        self.assertEqual(self.browser.execute_script("return window.__not_reloaded;"), 42,
                         "the page was reloaded instead of updating itself")
        self.screenshot("after_switch")
        for c in clients:
            c.close()


if __name__ == "__main__":
    unittest.main()
