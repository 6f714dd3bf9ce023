"""Deployment over TLS with SuperNode authentication, on 127.0.0.1.

The test makes a certificate authority and a SuperLink certificate for 127.0.0.1 with
the ``cryptography`` package, and three SuperNode key pairs (NIST P-384, OpenSSH
format). It registers two public keys with ``flwr supernode register``. The third
SuperNode, whose key is not registered, must be refused, and the search must run on
the two registered ones. Every process is stopped by PID when the test ends.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import time
from pathlib import Path

import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from simulations.processes import CONNECTION, FlowerProcesses, TlsFiles, executable
from simulations.runner import REPO_ROOT, app_config_keys, build_run_config

REFUSED_WAIT_S = 120.0


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


def make_certificates(folder: Path) -> TlsFiles:
    """Write a CA and a server certificate valid for 127.0.0.1 and localhost; return their files."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (x509.CertificateBuilder().subject_name(_name("apfp-test-ca")).issuer_name(_name("apfp-test-ca"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (x509.CertificateBuilder().subject_name(_name("apfp-superlink")).issuer_name(ca.subject)
              .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                          x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(folder / "ca.crt", folder / "server.pem", folder / "server.key")
    files.ca_certificate.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.server_certificate.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(files.server_key, server_key)
    return files


def make_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """Write an OpenSSH P-384 key pair ``name`` and ``name.pub``; return both paths."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + b" " + name.encode())
    private.chmod(0o600)
    return private, public


def wait_for_text(path: Path, pattern: str, timeout_s: float) -> str | None:
    """Return the first match of ``pattern`` in the file at ``path`` within ``timeout_s``, else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            found = re.search(pattern, path.read_text("utf-8", errors="replace"))
            if found:
                return found.group(0)
        time.sleep(1.0)
    return None


@pytest.mark.slow  # about 2 minutes on 2 cores: every message starts a fresh ClientApp process
def test_tls_deployment_refuses_unregistered_node(tiny_run_dir: Path, tmp_path: Path) -> None:
    tls = make_certificates(tmp_path / "certs")
    keys = tmp_path / "keys"
    keys.mkdir()
    registered = [make_node_key(keys, f"supernode-{i}") for i in range(2)]
    stranger, _ = make_node_key(keys, "stranger")
    output = tmp_path / "federated"
    settings = {"num-rounds": 1, "min-clients": 2, "candidates-per-client": 1, "max-steps": 3, "bn-batches": 2,
                "round-timeout": 600.0}
    config = build_run_config(settings, run_dir=tiny_run_dir, output_dir=output, data_root=None, resume=False,
                              allowed=app_config_keys(REPO_ROOT))
    config_file = tmp_path / "run-config.toml"
    config_file.write_text(tomli_w.dumps(config), "utf-8")
    logs = tmp_path / "logs"

    with FlowerProcesses(logs, simulation=False, tls=tls, supernode_auth=True) as flower:
        for _, public in registered:
            flower.flwr("supernode", "register", str(public), CONNECTION, log_name="register.log")
        listed = flower.flwr("supernode", "list", CONNECTION, "--format", "json")
        nodes = json.loads(listed[listed.index("{"):])["nodes"]
        assert [n["status"] for n in nodes] == ["registered", "registered"]

        refused = flower.start_supernode('partition-id=0 num-partitions=2 hw-profile="cpu-1t-fp32"',
                                         "supernode-stranger.log", private_key=stranger)
        message = wait_for_text(logs / "supernode-stranger.log", "Failed to activate SuperNode", REFUSED_WAIT_S)
        assert message is not None, "the SuperNode with an unregistered key was not refused"
        assert refused.wait(timeout=REFUSED_WAIT_S) != 0
        assert "No SuperNode found with the given public key" in (logs / "superlink.log").read_text("utf-8")
        flower.stop(refused)

        for pid, ((private, _), profile) in enumerate(zip(registered, ("cpu-1t-fp32", "cpu-1t-fp32-noopt"))):
            flower.start_supernode(f'partition-id={pid} num-partitions=2 hw-profile="{profile}"',
                                   f"supernode-{pid}.log", private_key=private)
        command = [executable("flwr"), "run", str(REPO_ROOT), CONNECTION, "--run-config", str(config_file), "--stream"]
        started = flower.spawn(command, "flwr-run.log")
        flower.watch([started], timeout_s=None)
        log = (logs / "flwr-run.log").read_text("utf-8")
        run_id = int(re.search(r"Successfully started run (\d+)", log).group(1))
        assert flower.run_status(run_id) == "finished:completed"
        pids = [p.pid for p in flower.processes]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    history = json.loads((output / "history.json").read_text("utf-8"))
    assert history["status"] == "completed"
    assert sorted(c["partition"] for c in history["clients"]) == [0, 1]
    assert history["rounds"][0]["accepted"] == 2
    assert history["rounds"][0]["rejected"] == 0
