"""Deployment artifacts: Dockerfile, docker-compose.yml, Helm chart, Prometheus and Grafana."""
