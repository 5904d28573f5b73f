"""riskstream state: pure state transitions and each service's table declarations."""
