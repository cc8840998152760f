"""A real Flower deployment on loopback for tests: TLS, SuperNode auth, our own PIDs."""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulations.engine import flwr_env, free_ports, stop, wait_healthy

BIN = Path(sys.executable).parent


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 / localhost (PEM files)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("deid test CA")).issuer_name(_name("deid test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return files


def make_node_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode's EC key pair in OpenSSH format (as `ssh-keygen -t ecdsa` writes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return private, public


class Federation:
    """SuperLink (TLS + SuperNode auth) and SuperNodes on 127.0.0.1, stopped by PID."""

    def __init__(self, root: Path):
        self.root = root
        self.home = root / "flwr-home"
        self.home.mkdir(parents=True)
        self.env = flwr_env(self.home)
        self.tls = make_certificates(root)
        (self.port,) = free_ports(1)
        self.processes: list[subprocess.Popen] = []
        (self.home / "config.toml").write_text(
            '[superlink]\ndefault = "test"\n\n[superlink.test]\n'
            f'address = "127.0.0.1:{self.port}"\nroot-certificates = "{self.tls["ca"]}"\n')

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("wb")
        process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.processes.append(process)
        return process

    def start_superlink(self) -> None:
        link = self._start("superlink", [
            str(BIN / "flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
            "--ssl-ca-certfile", str(self.tls["ca"]), "--ssl-certfile", str(self.tls["cert"]),
            "--ssl-keyfile", str(self.tls["key"]), "--enable-supernode-auth",
            "--database", str(self.home / "state.db")])
        wait_healthy(self.port, link, scheme="https", ca=self.tls["ca"])

    def flwr(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def register(self, public_key: Path) -> None:
        done = self.flwr("supernode", "register", str(public_key), "test")
        assert done.returncode == 0, done.stdout + done.stderr

    def start_supernode(self, name: str, keys: tuple[Path, Path], node_config: str) -> subprocess.Popen:
        (runtime_port,) = free_ports(1)
        return self._start(name, [
            str(BIN / "flower-supernode"), "--superlink", f"127.0.0.1:{self.port}",
            "--root-certificates", str(self.tls["ca"]), "--port", str(runtime_port),
            "--auth-supernode-private-key", str(keys[0]),
            "--auth-supernode-public-key", str(keys[1]), "--node-config", node_config])

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for process in reversed(self.processes):
            stop(process)
