"""Scenario 11: max_clients.

Goal: with max_clients = 2, a third client is closed at once while the first two keep working;
when one leaves, a new client is served again.
"""

import unittest

from integration_support import IntegrationTest, answers, tb


class MaxClientsTest(IntegrationTest):
    def test_11_client_beyond_max_clients_is_closed_at_once(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port, max_clients=2)
        first, second = tb.RespClient(port), tb.RespClient(port)
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        self.assertEqual(answers(first), "old")
        self.assertEqual(answers(second), "old")

        third = tb.RespClient(port)
        self.addCleanup(third.close)
        self.assertIsNone(answers(third), "the client beyond max_clients must not be served")
        self.assert_closed_within(third, 5, "client beyond max_clients")
        self.assertEqual(answers(first), "old")
        self.assertEqual(answers(second), "old")

        first.close()
        self.eventually(lambda: tb.whoami(port) == "old", 10,
                        "a client is served once below max_clients again")


if __name__ == "__main__":
    unittest.main()
