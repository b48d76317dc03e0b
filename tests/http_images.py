"""A real HTTP(S) server on 127.0.0.1 for the search-by-URL tests (tests/unit/test_fetch.py,
tests/api/test_search_by_url.py): http.server in a thread, no internet.

Routes: what a test put there with `serve` or `redirect`, and these built-ins:
  /redirect/N      a chain of N redirects (302, relative Locations) ending at /image
  /image           the image given to the server
  /large           a body of `large_size` bytes with its Content-Length
  /lying-length    a Content-Length of 1 GB, then a few bytes and silence
  /endless         bytes until the client goes away, no Content-Length (HTTP/1.0, close-delimited)
  /slow            the headers, then one byte every 0.2 s, never ending
  /slow-headers    the status line, then a header one byte every 0.2 s, never ending
  /hang            reads the request, never answers
  /status/CODE     that status, a short text body
  /text            a page of HTML: no image
Every request is recorded as (path, Host header) in `requests`.
"""

from __future__ import annotations

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ImageServer:
    def __init__(self, image: bytes = b"", *, host: str = "127.0.0.1", large_size: int = 0,
                 tls: ssl.SSLContext | None = None):
        self.image = image
        self.large_size = large_size
        self.routes: dict[str, tuple[int, dict, bytes]] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.stopping = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                owner.requests.append((self.path, self.headers.get("Host")))
                owner._answer(self)

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       name="image-server", daemon=True)

    def __enter__(self) -> "ImageServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def serve(self, path: str, body: bytes, content_type: str = "image/jpeg", status: int = 200) -> str:
        self.routes[path] = (status, {"Content-Type": content_type}, body)
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = (status, {"Location": location}, b"")
        return self.url(path)

    # -- answers -------------------------------------------------------------------------------------------------
    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?", 1)[0]
        try:
            if path in self.routes:
                status, headers, body = self.routes[path]
                self._send(h, status, headers, body)
            elif path.startswith("/redirect/"):
                left = int(path.rsplit("/", 1)[1])
                self._send(h, 302, {"Location": f"/redirect/{left - 1}" if left > 1 else "/image"}, b"")
            elif path == "/image":
                self._send(h, 200, {"Content-Type": "image/jpeg"}, self.image)
            elif path == "/large":
                self._send(h, 200, {"Content-Type": "image/jpeg"}, b"\xff" * self.large_size)
            elif path == "/lying-length":
                h.send_response(200)
                h.send_header("Content-Length", str(10**9))
                h.end_headers()
                h.wfile.write(b"\xff\xd8\xff")
                h.wfile.flush()
                self.stopping.wait(30)
            elif path == "/endless":
                h.protocol_version = "HTTP/1.0"
                h.send_response(200)
                h.send_header("Content-Type", "image/jpeg")
                h.end_headers()
                chunk = b"\xff" * 65536
                while not self.stopping.is_set():
                    h.wfile.write(chunk)
            elif path == "/slow":
                h.send_response(200)
                h.send_header("Content-Type", "image/jpeg")
                h.send_header("Content-Length", "1000000")
                h.end_headers()
                self._drip(h, b"\xff" * 1000000)
            elif path == "/slow-headers":
                h.wfile.write(b"HTTP/1.1 200 OK\r\n")
                self._drip(h, b"X-Slow: " + b"a" * 60000)
            elif path == "/hang":
                self.stopping.wait(30)
            elif path.startswith("/status/"):
                self._send(h, int(path.rsplit("/", 1)[1]), {"Content-Type": "text/plain"}, b"no such image here")
            elif path == "/text":
                self._send(h, 200, {"Content-Type": "text/html"}, b"<!doctype html><p>not an image</p>")
            else:
                self._send(h, 404, {"Content-Type": "text/plain"}, b"not found")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass  # the client went away: what the limits are for

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, headers: dict, body: bytes) -> None:
        h.send_response(status)
        for name, value in headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _drip(self, h: BaseHTTPRequestHandler, data: bytes) -> None:
        for i in range(len(data)):
            if self.stopping.is_set():
                return
            h.wfile.write(data[i:i + 1])
            h.wfile.flush()
            time.sleep(0.2)


def tls_pair(tmp_path, names: list[str]) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str]]:
    """(a server context with a certificate for `names`, a client context trusting only its test CA, the SNI
    names the server has seen so far)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imgsearch test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    seen: list[str] = []
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    server.sni_callback = lambda sock, name, ctx: seen.append(name)
    client = ssl.create_default_context(cafile=str(ca_file))
    return server, client, seen
