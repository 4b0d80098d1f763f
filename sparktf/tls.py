"""TLS 1.3 for the control and feed channels (confidentiality; the MAC framing stays).

When is it on: ``TFCluster.run(..., encrypt=None)`` (the default) turns it on
when the Spark application encrypts its own traffic (:data:`SPARK_SETTINGS`);
``encrypt=True`` turns it on regardless, ``encrypt=False`` off (with a
warning if Spark encrypts).

How it works: the driver makes one key pair and self-signed certificate per
cluster (:func:`new_identity`).  The certificate and key travel to the nodes
the way the cluster secret does (inside the Spark task, then in the node's
private ``spec.json``); the certificate alone travels to the feeding tasks.
Every server (the driver's control server, each node's feed server) presents
that certificate; every client trusts that certificate and nothing else: no
system CA store, no host name check (the peer is known by its pinned
certificate, not its name), and the peer's certificate must equal the pinned
one byte for byte.  Only TLS 1.3 is offered.

Clients do not present certificates: the HMAC handshake of
:mod:`sparktf.wire`, which runs inside the TLS connection, proves that a
client knows the cluster secret, so feeding tasks never need the private key.

Threads: OpenSSL forbids using one SSL object from two threads at once, and
the control channel reads in one thread while another sends.
:class:`TLSSocket` therefore drives TLS through memory buffers
(``ssl.SSLObject``) under a lock that is held only while bytes are encrypted
or decrypted, never while the socket blocks.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import ConfigError, ProtocolError
from .wire import TruncatedFrame, peername

logger = logging.getLogger(__name__)

#: Spark settings that mean "this application encrypts its traffic" (any one true).
SPARK_SETTINGS = ("spark.network.crypto.enabled", "spark.ssl.enabled", "spark.ssl.rpc.enabled",
                  "spark.authenticate.enableSaslEncryption", "spark.io.encryption.enabled")

#: Plaintext bytes encrypted per lock hold (16 TLS records).
_SEND_CHUNK = 256 << 10
#: Ciphertext bytes read from the socket at once.
_RECV_CHUNK = 256 << 10
#: How long the certificate is valid.  It is pinned, never checked against a CA,
#: and dies with its cluster; the validity only has to outlast the longest
#: training run and tolerate clocks that disagree.
_VALID_DAYS = 3650


def spark_settings_on(conf: Any) -> list[str]:
    """The :data:`SPARK_SETTINGS` that are ``true`` in a ``SparkConf``."""
    return [k for k in SPARK_SETTINGS if str(conf.get(k, "false")).strip().lower() == "true"]


def for_cluster(encrypt: bool | None, conf: Any) -> "Identity | None":
    """The cluster's TLS identity, or None for clear channels (see the module doc)."""
    if encrypt is not None and not isinstance(encrypt, bool):
        raise ConfigError(f"encrypt must be True, False or None (follow Spark's settings), "
                          f"got {encrypt!r}")
    spark_on = spark_settings_on(conf)
    if encrypt is None:
        encrypt = bool(spark_on)
    elif not encrypt and spark_on:
        logger.warning("sparktf: TFCluster.run(encrypt=False) although %s is true: the "
                       "control and feed channels (training rows, inference results) are "
                       "sent unencrypted", " and ".join(spark_on))
    if not encrypt:
        return None
    logger.info("sparktf: TLS 1.3 on the control and feed channels (%s)",
                " and ".join(spark_on) + " is true" if spark_on else "encrypt=True")
    return new_identity()


@dataclass(frozen=True)
class Identity:
    """One cluster's certificate and private key (PEM).  The key is never shown in a repr."""

    cert_pem: str
    key_pem: str = field(repr=False)

    def server(self) -> "ServerTLS":
        return ServerTLS(self.cert_pem, self.key_pem)

    def client(self) -> "ClientTLS":
        return ClientTLS(self.cert_pem)


def new_identity() -> Identity:
    """A fresh ECDSA P-256 key and a self-signed certificate for it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sparktf cluster")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public = key.public_key()
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
            # Its own trust anchor: OpenSSL accepts a self-signed certificate as one
            # when it is marked as a CA that may sign certificates.
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return Identity(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem=key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode())


def identity(cert_pem: str | None, key_pem: str | None) -> Identity | None:
    """The identity a node spec carries; None (clear channels) without one."""
    return Identity(cert_pem, key_pem) if cert_pem and key_pem else None


def client(cert_pem: str | None) -> "ClientTLS | None":
    """A client for peers that present ``cert_pem``; None (clear channels) without one."""
    return ClientTLS(cert_pem) if cert_pem else None


def _tls13(protocol: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class ClientTLS:
    """Client side: trusts the cluster's certificate only."""

    def __init__(self, cert_pem: str) -> None:
        self.context = _tls13(ssl.PROTOCOL_TLS_CLIENT)
        self.context.check_hostname = False  # the pinned certificate identifies the peer
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.context.load_verify_locations(cadata=cert_pem)  # the only trust anchor
        self.pinned = ssl.PEM_cert_to_DER_cert(cert_pem)

    def wrap(self, sock: socket.socket) -> "TLSSocket":
        """Run the TLS handshake on a connected socket (blocking, under its timeout)."""
        tls = TLSSocket(sock, self.context, server_side=False)
        if tls.peer_certificate() != self.pinned:
            tls.close()
            raise ProtocolError(f"TLS peer {tls.peer} presented a certificate other than the "
                                "cluster's")
        return tls


class ServerTLS:
    """Server side: presents the cluster's certificate; asks clients for none."""

    def __init__(self, cert_pem: str, key_pem: str) -> None:
        self.context = _tls13(ssl.PROTOCOL_TLS_SERVER)
        self.context.num_tickets = 0  # no resumption: nothing to send after the handshake
        with _private_file(cert_pem + key_pem) as path:
            self.context.load_cert_chain(path)

    def wrap(self, sock: socket.socket) -> "TLSSocket":
        return TLSSocket(sock, self.context, server_side=True)


@contextlib.contextmanager
def _private_file(data: str) -> Iterator[str]:
    """A path holding ``data`` for as long as the block runs (``load_cert_chain`` reads
    only files).  An anonymous in-memory file where Linux has them, else a 0600 file
    in a fresh 0700 directory; either is gone when the block ends."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("sparktf-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    directory = tempfile.mkdtemp(prefix="sparktf-tls-")  # mode 0700
    path = os.path.join(directory, "cluster.pem")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(data)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.rmdir(directory)


class TLSSocket:
    """A connected socket that speaks TLS; the methods :mod:`sparktf.wire` uses.

    Safe for one reading and one sending thread at once (see the module
    doc).  Timeouts are the wrapped socket's; ``shutdown`` of the wrapped
    socket (a handshake deadline, a closing server) wakes a blocked read.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_side: bool) -> None:
        self._sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=server_side)
        self._lock = threading.Lock()  # the SSL object and its buffers
        self._send_lock = threading.Lock()  # ciphertext goes onto the socket in order
        self.peer = peername(sock)
        self._handshake(server_side)

    def _handshake(self, server_side: bool) -> None:
        received = False
        while True:
            with self._lock:
                try:
                    self._obj.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                except ssl.SSLError as e:
                    self._send_alert()
                    why = ("not a TLS 1.3 client: a client without TLS, or from another "
                           "cluster?" if server_side else "not the cluster's certificate, or "
                           "not TLS 1.3")
                    raise ProtocolError(f"TLS handshake with {self.peer} failed ({why}): "
                                        f"{e.reason or e}") from None
                out = self._out.read()
            if out:
                self._sock.sendall(out)
            if done:
                return
            data = self._sock.recv(_RECV_CHUNK)
            if not data:
                if received:
                    raise TruncatedFrame(f"{self.peer} closed the connection during the TLS "
                                         "handshake")
                raise EOFError("connection closed by peer")
            received = True
            with self._lock:
                self._in.write(data)

    def _send_alert(self) -> None:
        """Best effort: tell a failed peer why (lock held)."""
        with contextlib.suppress(OSError):
            alert = self._out.read()
            if alert:
                self._sock.send(alert)

    def peer_certificate(self) -> bytes | None:
        with self._lock:
            return self._obj.getpeercert(binary_form=True)

    # -- what wire.Channel uses ------------------------------------------------------
    def sendall(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        with self._send_lock:
            for start in range(0, len(view), _SEND_CHUNK):
                with self._lock:
                    self._obj.write(view[start:start + _SEND_CHUNK])
                    out = self._out.read()
                self._sock.sendall(out)

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        """Decrypted bytes into ``buffer``; 0 at the end of the stream."""
        nbytes = nbytes or len(buffer)
        while True:
            with self._lock:
                try:
                    return self._obj.read(nbytes, buffer)
                except ssl.SSLWantReadError:
                    pending = self._out.pending
                except ssl.SSLZeroReturnError:  # the peer's close_notify
                    return 0
                except ssl.SSLError as e:
                    raise ProtocolError(f"TLS record from {self.peer} rejected: "
                                        f"{e.reason or e}") from None
            if pending:
                self._flush()
            data = self._sock.recv(_RECV_CHUNK)
            if not data:
                return 0
            with self._lock:
                self._in.write(data)

    def recv(self, nbytes: int) -> bytes:
        buf = bytearray(nbytes)
        return bytes(buf[:self.recv_into(buf, nbytes)])

    def _flush(self) -> None:
        """Send what reading produced (a key update's answer); never wait for a sender."""
        if self._send_lock.acquire(blocking=False):
            try:
                with self._lock:
                    out = self._out.read()
                if out:
                    self._sock.sendall(out)
            finally:
                self._send_lock.release()

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._sock.gettimeout()

    def setsockopt(self, *args: Any) -> None:
        self._sock.setsockopt(*args)

    def getpeername(self) -> Any:
        return self._sock.getpeername()

    def getsockname(self) -> Any:
        return self._sock.getsockname()

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown(self, how: int) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()

