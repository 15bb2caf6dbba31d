"""Scenario 12: tunneld --check-config.

Goal: a good config exits 0; a bad one exits 1 and prints every error as PATH:LINE:COL: message.
"""

import re
import tempfile
import unittest
from pathlib import Path

from integration_support import IntegrationTest, daemon_config, service_config, tb

GOOD = tb.to_toml(daemon_config({"svc": service_config(6390, 6391, 6392)},
                                control_socket="/tmp/x/control.sock",
                                state_file="/tmp/x/state.json"))

BAD = """[daemon]
control_socket = "/tmp/x/control.sock"
state_file = "/tmp/x/state.json"

[services.svc]
kind = "tcp"
listen = "127.0.0.1:6390"
old = "127.0.0.1:6391"
new = "127.0.0.1:6392"
drain_timeout = "soon"
colour = "blue"
"""


class CheckConfigTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.dir = Path(tempfile.mkdtemp(dir=self.bed.dir))

    def test_12a_good_config_exits_zero(self):
        path = self.dir / "good.toml"
        path.write_text(GOOD)
        result = tb.check_config(path)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_12b_bad_config_prints_every_error_with_path_line_col_and_exits_one(self):
        path = self.dir / "bad.toml"
        path.write_text(BAD)
        result = tb.check_config(path)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        for line in (10, 11):  # drain_timeout = "soon"; unknown key colour
            self.assertRegex(output, re.compile(rf"^{re.escape(str(path))}:{line}:\d+: \S",
                                                re.MULTILINE))

    def test_12c_toml_syntax_error_is_located(self):
        path = self.dir / "syntax.toml"
        path.write_text("[daemon]\nlog_level = \n")
        result = tb.check_config(path)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertRegex(output, re.compile(rf"^{re.escape(str(path))}:2:\d+: \S", re.MULTILINE))


if __name__ == "__main__":
    unittest.main()
