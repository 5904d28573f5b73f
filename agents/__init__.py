"""riskstream agents: pure scoring logic and the thin Faust wiring of each service."""
