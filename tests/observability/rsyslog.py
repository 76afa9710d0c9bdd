"""A real rsyslog (Debian) on loopback with a test CA: syslog over TLS (RFC 5425) into a file.

Used by test_siem_rsyslog.py. The certificates are made here (cryptography): a CA, a
server certificate for ``localhost``/127.0.0.1 and one for another name (the mismatch).
Each received message is written as ``<receive time, unix s.us> <msgid> <msg>``.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CONF = """
global(workDirectory="{work}"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}"
       maxMessageSize="64k")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
template(name="siem" type="string" string="%timegenerated:::date-rfc3339% %msgid% %msg%\\n")
ruleset(name="siem") {{
  action(type="omfile" file="{out}" template="siem" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="siem")
"""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: pathlib.Path, key) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def make_pki(d: pathlib.Path) -> dict[str, pathlib.Path]:
    """ca.pem; server.pem/.key (localhost, 127.0.0.1); wrong.pem/.key (wrong.example)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("flk test CA")).issuer_name(_name("flk test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": d / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for label, names in (("server", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                         ("wrong", [x509.DNSName("wrong.example")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(str(names[0].value))).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        out[label] = d / f"{label}.pem"
        out[label].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[label + "_key"] = d / f"{label}.key"
        _write_key(out[label + "_key"], key)
    return out


class Rsyslog:
    """``rsyslogd -n`` with the configuration above; :meth:`stop` / :meth:`start` for outages."""

    def __init__(self, d: pathlib.Path, port: int, pki: dict, cert: str = "server") -> None:
        self.d, self.port, self.out = d, port, d / "received.log"
        (d / "work").mkdir(exist_ok=True)
        self.conf = d / "rsyslog.conf"
        self.conf.write_text(CONF.format(work=d / "work", ca=pki["ca"], cert=pki[cert], key=pki[cert + "_key"],
                                         out=self.out, port=port))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 10.0) -> Rsyslog:
        exe = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        self.proc = subprocess.Popen([exe, "-n", "-f", str(self.conf), "-i", str(self.d / "rsyslogd.pid")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("rsyslogd exited: " + self.proc.stdout.read().decode(errors="replace")[-800:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"rsyslogd did not listen on 127.0.0.1:{self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def lines(self) -> list[tuple[float, str, str]]:
        """(receive time, msgid, msg) of every received message so far."""
        if not self.out.exists():
            return []
        rows = []
        for line in self.out.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                rows.append((datetime.datetime.fromisoformat(parts[0]).timestamp(), parts[1], parts[2].strip()))
        return rows
