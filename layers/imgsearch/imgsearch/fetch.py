"""Fetching a query image from an http(s) URL: search by URL, and a server-side request forgery surface.

Whoever sends a URL chooses where this process connects, so every hop is checked before it is made:

- the URL: http or https only, no credentials (user:password@), at most MAX_URL_LENGTH characters, no spaces or
  control characters;
- the address: the host is resolved once per hop, and EVERY address it resolves to must be on the public internet
  (is_public_address: not loopback, private, shared, link-local (the cloud metadata services 169.254.169.254 and
  fd00:ec2::254), multicast, reserved, documentation or unspecified, nor an IPv4-mapped or NAT64 form of one);
- the connection goes to the address that was checked, never to a second lookup of the name (a DNS-rebinding
  server cannot answer "public" to the check and "private" to the connect): the socket is opened to the IP, and
  the name is used only where HTTP and TLS need it, in the Host header, the SNI and the certificate check;
- redirects are followed here, not by a library, at most MAX_REDIRECTS, each target checked like the first URL;
- the body is streamed against the byte limit (IMGSEARCH_MAX_IMAGE_BYTES): a Content-Length over it is refused
  before reading, and reading stops as soon as it is passed;
- timeouts: CONNECT_TIMEOUT for each connect, READ_TIMEOUT for each read, and DEADLINE for the whole fetch with
  every redirect (name lookups included), which a server dripping one byte at a time cannot stretch.

What the caller did wrong is an InvalidRequestError (the API's 400): a refused scheme, credentials, a host that is
not public, too many redirects. An image over the limit is an ImageTooLargeError (413). What the remote end did
is a UrlFetchError (502): no such host, no connection, a timeout, a broken TLS or HTTP answer, an error status.
Messages name the URL's host and never an address it resolved to; the log has the details.

IMGSEARCH_URL_ALLOW_PRIVATE=true (Settings.url_allow_private) turns the address check off, for tests and a
machine's own use; every other rule stays.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import quote, urljoin, urlsplit

from .config import Settings
from .errors import ImageTooLargeError, InvalidRequestError, UrlFetchError

log = logging.getLogger(__name__)

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048
# The form of every URL fetched, as a regular expression (the OpenAPI document states it too): http or https, a host
# name (international ones too) or a [bracketed IPv6 address], a port from 1 to 65535, then anything but spaces and
# control characters. No user:password@, no backslash, no percent-encoded host, no IPv6 zone.
URL_PATTERN = (r"^[Hh][Tt][Tt][Pp][Ss]?://"
               r"([^\x00-\x20\x7f/?#@:\[\]\\%]+|\[[0-9A-Fa-f:.]+\])"
               r"(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
               r"([/?#][^\x00-\x20\x7f]*)?$")
_URL_FORM = re.compile(URL_PATTERN)
MAX_REDIRECTS = 3
CONNECT_TIMEOUT = 5.0  # seconds, each connect
READ_TIMEOUT = 5.0  # seconds, each read of the answer
DEADLINE = 15.0  # seconds for the whole fetch, redirects and name lookups included
REDIRECTS = (301, 302, 303, 307, 308)
USER_AGENT = "imgsearch (search by URL)"
_CHUNK = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not on the public internet (IANA's special-purpose address registries). Python's own is_global misses some of
# these (multicast, 192.0.0.0/24's assignments) and changes between versions, so the table is spelled out here.
_NOT_PUBLIC_V4 = tuple(ipaddress.IPv4Network(net) for net in (
    "0.0.0.0/8",  # "this network", 0.0.0.0 included
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local: 169.254.169.254 is the cloud metadata service
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, 255.255.255.255 included
))
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")  # everything else (::1, fc00::/7, fe80::/10, ff00::/8) is not
_NOT_PUBLIC_V6 = tuple(ipaddress.IPv6Network(net) for net in (
    "2001::/23",  # IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID
    "2001:db8::/32", "3fff::/20",  # documentation
    "2002::/16",  # 6to4: an IPv4 address tunnelled, private or not
))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known NAT64 prefix: the last 32 bits are an IPv4 address


def is_public_address(address: str | IPAddress) -> bool:
    """True when `address` is on the public internet: the only addresses search by URL connects to.

    IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses are judged by the IPv4 address they carry;
    other IPv6 addresses must be global unicast (2000::/3) outside the special ranges above."""
    ip = ipaddress.ip_address(address.split("%", 1)[0] if isinstance(address, str) else address)  # drop a zone
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip in _NAT64:
            return is_public_address(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip not in _GLOBAL_UNICAST_V6 or any(ip in net for net in _NOT_PUBLIC_V6):
            return False
    elif any(ip in net for net in _NOT_PUBLIC_V4):
        return False
    # Belt and braces: whatever this Python knows to be special is refused too.
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or not ip.is_global)


@dataclass(frozen=True)
class Target:
    """One checked URL: where to connect and what to ask for."""

    url: str
    scheme: str
    host: str  # as HTTP and TLS name it: ASCII (IDNA), an IPv6 address without brackets
    port: int
    path: str  # path and query, the request target

    @property
    def tls(self) -> bool:
        return self.scheme == "https"


def parse_url(url: object) -> Target:
    """Check a URL's form (not where it points): InvalidRequestError with the reason, or the Target."""
    if not isinstance(url, str) or not url:
        raise InvalidRequestError("'url' must be an http:// or https:// URL")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequestError(f"the URL is {len(url)} characters long; at most {MAX_URL_LENGTH} are accepted")
    if any(ch <= " " or ch == "\x7f" for ch in url):
        raise InvalidRequestError("the URL holds spaces or control characters: percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequestError(f"the URL cannot be parsed: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"{scheme}:" if scheme else "no scheme"
        raise InvalidRequestError(f"only http:// and https:// URLs can be fetched; this one has {shown}")
    if "@" in parts.netloc:
        raise InvalidRequestError("URLs with credentials (user:password@host) are refused: the image must be public")
    if not parts.hostname or not _URL_FORM.fullmatch(url):
        raise InvalidRequestError("the URL must be http(s)://HOST[:PORT][/PATH]: a host name or a [bracketed IPv6 "
                                  "address], a port from 1 to 65535")
    host = parts.hostname.rstrip(".")  # lower case; an IPv6 address without its brackets
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise InvalidRequestError("the URL's host is not a valid domain name") from None
    if not host:
        raise InvalidRequestError("the URL has no host")
    path = quote(parts.path or "/", safe="/%!$&'()*+,;=:@~-._") + (
        "?" + quote(parts.query, safe="/%!$&'()*+,;=:@~-._?") if parts.query else "")
    return Target(url=url, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), path=path)


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """Every address `host` resolves to (an IP literal: itself), in the resolver's order, within `timeout` seconds.

    getaddrinfo cannot be given a timeout, so it runs in a daemon thread that is abandoned when time is up."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    answer: dict = {}

    def lookup():
        try:
            answer["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            answer["error"] = exc

    worker = threading.Thread(target=lookup, name="imgsearch-resolve", daemon=True)
    worker.start()
    worker.join(max(timeout, 0))
    if worker.is_alive():
        raise UrlFetchError(f"looking up {host} took more than {timeout:.3g} s")
    if "error" in answer:
        log.info("looking up %s failed: %s", host, answer["error"])
        raise UrlFetchError(f"could not resolve the host {host}")
    addresses = list(dict.fromkeys(info[4][0] for info in answer["infos"]))
    if not addresses:
        raise UrlFetchError(f"could not resolve the host {host}")
    return addresses


@dataclass(frozen=True)
class UrlFetcher:
    """Fetches the bytes at a URL under the rules in this module's docstring.

    `address_allowed` decides which resolved addresses may be connected to (default: is_public_address);
    `resolver` maps (host, port, timeout) to addresses (None: this module's resolve, looked up at each call).
    Tests replace them."""

    max_bytes: int
    address_allowed: Callable[[IPAddress], bool] = is_public_address
    resolver: Callable[[str, int, float], Sequence[str]] | None = None
    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT
    deadline: float = DEADLINE
    max_redirects: int = MAX_REDIRECTS
    tls_context: ssl.SSLContext | None = field(default=None, repr=False)  # None: the system's CAs, verified

    @classmethod
    def from_settings(cls, settings: Settings, **overrides) -> "UrlFetcher":
        allowed = _any_address if settings.url_allow_private else is_public_address
        return cls(max_bytes=settings.max_image_bytes, address_allowed=allowed, **overrides)

    def fetch(self, url: str) -> bytes:
        """The body at `url`, following at most max_redirects redirects; see the module docstring for errors."""
        clock = _Deadline(self.deadline)
        target = parse_url(url)
        for hop in range(self.max_redirects + 1):
            location, body = self._get(target, clock, first=hop == 0)
            if location is None:
                return body
            try:
                target = parse_url(location)
            except InvalidRequestError as exc:
                raise InvalidRequestError(f"refused: the URL redirects to a URL that is refused: {exc}") from None
        raise InvalidRequestError(f"refused: the URL redirects more than {self.max_redirects} times")

    # -- one hop -----------------------------------------------------------------------------------------------
    def _get(self, target: Target, clock: "_Deadline", *, first: bool) -> tuple[str | None, bytes]:
        """(the redirect's target, b"") or (None, the body)."""
        addresses = (self.resolver or resolve)(target.host, target.port, clock.left(f"looking up {target.host}"))
        refused = [a for a in addresses if not self.address_allowed(ipaddress.ip_address(a.split("%", 1)[0]))]
        if refused:
            log.warning("search by URL refused %s: %s resolves to %s", target.url, target.host, ", ".join(refused))
            if first:
                raise InvalidRequestError(
                    f"refused: {target.host} is not a public internet host (loopback, private, link-local, "
                    "multicast and reserved addresses cannot be fetched)")
            raise InvalidRequestError("refused: the URL redirects to a host that is not on the public internet "
                                      "(loopback, private, link-local, multicast and reserved addresses cannot "
                                      "be fetched)")
        connection = _PinnedConnection(target, addresses, fetcher=self, clock=clock)
        watchdog = threading.Timer(clock.left(f"fetching from {target.host}"), connection.abort)
        watchdog.daemon = True
        watchdog.start()
        try:
            return self._exchange(connection, target, clock)
        except (ImageTooLargeError, InvalidRequestError, UrlFetchError):
            raise
        except (TimeoutError, socket.timeout) as exc:
            raise self._failed(target, exc, connection,
                               f"{target.host} did not answer within {self.read_timeout:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise self._failed(target, exc, connection,
                               f"the TLS certificate of {target.host} could not be verified") from None
        except ssl.SSLError as exc:
            raise self._failed(target, exc, connection, f"the TLS handshake with {target.host} failed") from None
        except http.client.HTTPException as exc:
            raise self._failed(target, exc, connection,
                               f"{target.host} sent a malformed or incomplete HTTP answer") from None
        except OSError as exc:
            raise self._failed(target, exc, connection, f"the connection to {target.host} failed") from None
        finally:
            watchdog.cancel()
            connection.close()

    def _exchange(self, connection: "_PinnedConnection", target: Target, clock: "_Deadline"):
        connection.request("GET", target.path, headers={
            "User-Agent": USER_AGENT, "Accept": "image/*", "Accept-Encoding": "identity", "Connection": "close"})
        response = connection.getresponse()
        if response.status in REDIRECTS:
            location = response.getheader("Location")
            if not location:
                raise UrlFetchError(f"{target.host} answered HTTP {response.status} without a Location")
            return urljoin(target.url, location.strip()), b""
        if not 200 <= response.status < 300:
            raise UrlFetchError(f"{target.host} answered HTTP {response.status} {response.reason}".rstrip())
        declared = response.getheader("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > self.max_bytes:
            raise ImageTooLargeError(self._too_large(target, f"is {int(declared)} bytes (its Content-Length)"))
        chunks, size = [], 0
        while True:
            chunk = response.read1(min(_CHUNK, self.max_bytes + 1 - size))
            if connection.aborted:
                break
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_bytes:
                raise ImageTooLargeError(self._too_large(target, "is larger than that"))
            chunks.append(chunk)
        if connection.aborted or clock.expired:
            raise UrlFetchError(f"fetching the image took more than {self.deadline:g} s")
        if response.length:  # the connection ended before the Content-Length was read
            raise http.client.IncompleteRead(b"", response.length)
        return None, b"".join(chunks)

    def _too_large(self, target: Target, what: str) -> str:
        return (f"this service accepts images of at most {self.max_bytes} bytes (IMGSEARCH_MAX_IMAGE_BYTES); "
                f"the image at {target.host} {what}")

    def _failed(self, target: Target, exc: BaseException, connection: "_PinnedConnection",
                message: str) -> UrlFetchError:
        log.info("search by URL: fetching %s failed: %r", target.url, exc)
        if connection.aborted:
            return UrlFetchError(f"fetching the image took more than {self.deadline:g} s")
        return UrlFetchError(message)


def fetch_image(url: str, settings: Settings) -> bytes:
    """The bytes of the image at `url`, fetched under this module's rules and the settings' limits."""
    return UrlFetcher.from_settings(settings).fetch(url)


def _any_address(_ip: IPAddress) -> bool:
    return True


@functools.lru_cache(maxsize=1)
def _system_tls() -> ssl.SSLContext:
    """Certificates verified against the system's CAs, host names checked (loaded once)."""
    return ssl.create_default_context()


class _Deadline:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def left(self, doing: str) -> float:
        """Seconds left; UrlFetchError when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise UrlFetchError(f"fetching the image took more than {self.seconds:g} s ({doing})")
        return left


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to target.host over a socket opened to one of the CHECKED addresses, never a new lookup.

    http.client takes the Host header from target.host; TLS gets target.host as its SNI and checks the certificate
    against it. abort() (the deadline's watchdog, another thread) shuts the socket so a blocked read returns."""

    def __init__(self, target: Target, addresses: Sequence[str], *, fetcher: UrlFetcher, clock: _Deadline):
        super().__init__(target.host, target.port, timeout=fetcher.read_timeout)
        self.default_port = 443 if target.tls else 80  # the Host header leaves the scheme's own port out
        self._addresses = list(addresses)
        self._fetcher = fetcher
        self._clock = clock
        self._tls = (fetcher.tls_context or _system_tls()) if target.tls else None
        self._lock = threading.Lock()
        self.aborted = False

    def connect(self) -> None:
        error: OSError | None = None
        for address in self._addresses:
            timeout = min(self._fetcher.connect_timeout, self._clock.left(f"connecting to {self.host}"))
            try:
                sock = socket.create_connection((address, self.port), timeout=timeout)
                break
            except (TimeoutError, socket.timeout):
                raise UrlFetchError(f"{self.host} did not accept a connection within {timeout:.3g} s") from None
            except OSError as exc:
                log.info("search by URL: connecting to %s (%s) failed: %s", self.host, address, exc)
                error = exc
        else:
            raise UrlFetchError(f"could not connect to {self.host}") from error
        sock.settimeout(self.timeout)
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_hostname=self.host, do_handshake_on_connect=False)
        with self._lock:
            self.sock = sock
            if self.aborted:
                _shut(sock)
        if self._tls is not None:
            sock.do_handshake()

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            if self.sock is not None:
                _shut(self.sock)


def _shut(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: an SSLSocket's would unwrap TLS
    except OSError:
        pass
