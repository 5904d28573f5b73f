"""Kafka TLS and SASL settings become the client options aiokafka and Faust expect."""

from __future__ import annotations

import ssl

import pytest

from apps.security import aiokafka_auth, faust_credentials
from apps.settings import Settings, SettingsError, load_settings
from tests.kafka_helpers import make_certificate


def test_plaintext_is_the_default():
    assert aiokafka_auth(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_over_plaintext_carries_the_mechanism_and_credentials(mechanism):
    s = Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="u",
        sasl_password="p",
    )
    auth = aiokafka_auth(s)
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["sasl_mechanism"] == mechanism
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("u", "p")
    assert auth["ssl_context"] is None


def test_sasl_ssl_verifies_the_broker_against_the_given_ca(tmp_path):
    cert, key = make_certificate(tmp_path)
    s = Settings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password="p",
        ssl_cafile=cert,
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    auth = aiokafka_auth(s)
    assert auth["security_protocol"] == "SASL_SSL"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1


def test_sasl_without_credentials_stops_startup(monkeypatch):
    monkeypatch.setenv("RISKSTREAM_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(SettingsError, match="RISKSTREAM_SASL_USERNAME"):
        load_settings()


def test_a_missing_certificate_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("RISKSTREAM_SSL_CAFILE", str(tmp_path / "nope.pem"))
    with pytest.raises(SettingsError, match="RISKSTREAM_SSL_CAFILE"):
        load_settings()


def test_the_password_is_not_shown_in_the_settings_repr():
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password="hunter2")
    assert "hunter2" not in repr(s)
