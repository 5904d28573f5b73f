"""riskstream apps: settings, the app factory, one Faust app per service, and the CLI."""
