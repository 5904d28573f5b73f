"""Settings every test process shares."""

from __future__ import annotations

import os

# The embedded broker completes a consumer group's join only after half the joining
# members' session timeout has passed: at the services' default of 10 s, every worker
# start and restart in the tests waited 5 s for its partitions, and a killed worker's
# partitions moved 10 s later. The processes the tests start (services, rebuilds,
# benches) inherit 6 s, Kafka's smallest default session timeout (heartbeats stay 1 s).
os.environ.setdefault("RISKSTREAM_SESSION_TIMEOUT_S", "6")
