"""Search by URL's fetcher (imgsearch.fetch), against real servers on 127.0.0.1: which addresses count as public,
which URLs are refused by their form, the connection pinned to the checked address, redirects re-checked and
counted, the byte limit while streaming, and the timeouts. No internet: a "public" host is simulated by letting
the fetcher allow 127.0.0.1 only (address_allowed) and, where a name is needed, by its resolver."""

from __future__ import annotations

import io
import ipaddress
import socket
import time

import pytest

from http_images import ImageServer, tls_pair
from imgsearch import fetch
from imgsearch.config import Settings
from imgsearch.errors import ConfigError, ImageTooLargeError, InvalidRequestError, UrlFetchError
from imgsearch.fetch import UrlFetcher, is_public_address, parse_url

LOOPBACK = ipaddress.ip_address("127.0.0.1")


def only_loopback(ip) -> bool:
    """The tests' stand-in for "the public internet": 127.0.0.1 and nothing else."""
    return ip == LOOPBACK


@pytest.fixture(scope="module")
def image() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def server(image):
    with ImageServer(image, large_size=4096) as running:
        yield running


def fetcher(**changes) -> UrlFetcher:
    return UrlFetcher(**{"max_bytes": 1_000_000, "address_allowed": only_loopback, **changes})


# -- the address table -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("address", [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "151.101.1.69", "100.63.255.255", "100.128.0.0", "172.15.255.255",
    "172.32.0.0", "192.167.255.255", "223.255.255.255", "169.253.255.255",
    "2606:4700:4700::1111", "2a00:1450:4001:80b::200e", "2001:4860:4860::8888",
    "::ffff:8.8.8.8", "::ffff:93.184.216.34", "64:ff9b::808:808",  # IPv4-mapped and NAT64 forms of public ones
])
def test_public_addresses(address):
    assert is_public_address(address)


@pytest.mark.parametrize("address", [
    # IPv4: loopback, private, shared, link-local (the metadata service), this network, multicast, reserved
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "100.64.0.1", "100.127.255.255", "169.254.169.254", "169.254.0.1", "0.0.0.0", "0.1.2.3", "224.0.0.1",
    "239.255.255.250", "240.0.0.1", "255.255.255.255", "192.0.0.9", "192.0.0.170", "192.0.2.1", "198.51.100.7",
    "203.0.113.9", "198.18.0.1", "192.88.99.1",
    # IPv6: loopback, unspecified, unique local (fd00:ec2::254 is AWS's metadata service), link-local, site-local,
    # multicast, documentation, discard, 6to4, Teredo, IPv4-compatible, SIIT
    "::1", "::", "fd00:ec2::254", "fc00::1", "fdff:ffff::1", "fe80::1", "fe80::1%eth0", "febf::1", "fec0::1",
    "ff02::1", "ff05::2", "2001:db8::1", "3fff::1", "100::1", "2002:c000:0201::1", "2002:0a00:0001::1",
    "2001::1", "2001:0:4136:e378::1", "::127.0.0.1", "::8.8.8.8", "::ffff:0:8.8.8.8", "5f00::1", "4000::1",
    # IPv4-mapped and NAT64 forms of refused IPv4 addresses
    "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:192.168.0.1",
    "::ffff:0.0.0.0", "::ffff:224.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1",
    "64:ff9b:1::a00:1",
])
def test_addresses_that_are_not_public(address):
    assert not is_public_address(address)
    assert not is_public_address(ipaddress.ip_address(address.split("%")[0]))


# -- the URL's form ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, reason", [
    ("file:///etc/passwd", "http"), ("ftp://example.com/a.jpg", "http"), ("gopher://example.com/", "http"),
    ("javascript:alert(1)", "http"), ("data:image/png;base64,AAAA", "http"), ("//example.com/a.jpg", "http"),
    ("example.com/a.jpg", "http"), ("", "http"), ("http:/example.com", "HOST"), ("http://", "HOST"),
    ("http:///a.jpg", "HOST"), ("http://:80/a.jpg", "HOST"), ("http://.", "HOST|no host"),
    ("http://user:pass@example.com/a.jpg", "credentials"), ("https://user@example.com/", "credentials"),
    ("http://:pass@example.com/", "credentials"), ("http://example.com@10.0.0.1/", "credentials"),
    ("http://example.com:0/", "PORT"), ("http://example.com:080/", "PORT"), ("http://example.com:65536/", "parsed"),
    ("http://example.com:99999/", "parsed"), ("http://example.com:x/", "parsed"), ("http://example.com:/", "PORT"),
    ("http://[::1/", "parsed"), ("http://[fe80::1%25lo]/", "PORT|parsed"), ("http://exa%6dple.com/", "HOST"),
    ("http://example.com\\@10.0.0.1/", "credentials"), ("http://example.com\\evil/", "HOST"),
    ("http://example.com/a b.jpg", "spaces"), ("http://example.com/a\r\nX-Injected: 1", "spaces"),
    ("http://example.com/\x00", "spaces"), ("http://example.com/" + "a" * 2048, "2048"),
])
def test_urls_refused_by_their_form(url, reason):
    with pytest.raises(InvalidRequestError, match=reason):
        parse_url(url)


def test_non_strings_are_refused():
    for value in (None, 12, ["http://example.com"], {"url": "x"}):
        with pytest.raises(InvalidRequestError):
            parse_url(value)


def test_urls_accepted_by_their_form():
    target = parse_url("HTTPS://Example.COM./a%20b/ç.jpg?x=1&y=ä#frag")
    assert (target.scheme, target.host, target.port) == ("https", "example.com", 443)
    assert target.path == "/a%20b/%C3%A7.jpg?x=1&y=%C3%A4"
    assert parse_url("http://[2606:4700::1]:8080").host == "2606:4700::1"
    assert parse_url("http://[2606:4700::1]:8080").path == "/"
    assert parse_url("http://bücher.example/").host == "xn--bcher-kva.example"
    assert parse_url("http://example.com/user@host").path == "/user@host"  # an @ in the path is no credential
    assert parse_url("http://example.com:65535").port == 65535 and parse_url("http://example.com:1").port == 1


# -- refused by where they point (the default: public hosts only) --------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/image", "http://localhost:{port}/image", "http://[::1]:{port}/image",
    "http://127.1:{port}/image", "http://2130706433:{port}/image", "http://0x7f000001:{port}/image",
    "http://0.0.0.0:{port}/image", "http://10.0.0.1/image", "http://192.168.0.1/", "http://172.16.5.4/",
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:127.0.0.1]:{port}/image", "http://[::ffff:169.254.169.254]/", "http://[fe80::1]/",
    "http://224.0.0.1/", "http://[ff02::1]/", "https://127.0.0.1:{port}/image",
])
def test_the_default_refuses_hosts_that_are_not_public(server, url):
    settings = Settings.from_env({})
    assert settings.url_allow_private is False
    with pytest.raises(InvalidRequestError, match="not a public internet host") as refused:
        fetch.fetch_image(url.format(port=server.port), settings)
    assert "127.0.0.1" not in str(refused.value) or "127.0.0.1" in url  # no resolved address is echoed
    assert not server.requests  # refused before connecting


def test_every_address_of_a_name_must_be_allowed(server):
    mixed = fetcher(resolver=lambda host, port, timeout: ["127.0.0.1", "10.0.0.7"])
    with pytest.raises(InvalidRequestError, match="images.example is not a public internet host") as refused:
        mixed.fetch(f"http://images.example:{server.port}/image")
    assert "10.0.0.7" not in str(refused.value) and "127.0.0.1" not in str(refused.value)
    assert not server.requests


def test_the_setting_allows_private_hosts(server, image):
    assert Settings.from_env({"IMGSEARCH_URL_ALLOW_PRIVATE": "true"}).url_allow_private is True
    settings = Settings.from_env({"IMGSEARCH_URL_ALLOW_PRIVATE": "true"})
    assert fetch.fetch_image(server.url("/image"), settings) == image
    assert fetch.fetch_image(server.url("/image", host="localhost"), settings) == image
    with pytest.raises(ConfigError, match="IMGSEARCH_URL_ALLOW_PRIVATE"):
        Settings.from_env({"IMGSEARCH_URL_ALLOW_PRIVATE": "maybe"})


def test_the_setting_relaxes_nothing_else(server):
    settings = Settings.from_env({"IMGSEARCH_URL_ALLOW_PRIVATE": "true"})
    for url, reason in (("file:///etc/passwd", "http"), (server.url("/image").replace("://", "://u:p@"), "credentials"),
                        (server.url("/redirect/4"), "more than 3")):
        with pytest.raises(InvalidRequestError, match=reason):
            fetch.fetch_image(url, settings)


# -- pinned to the checked address ---------------------------------------------------------------------------------
def test_the_connection_goes_to_the_checked_address_with_the_name_in_the_host_header(server, image):
    """A rebinding resolver answers an allowed address once, then a private one: there is no second lookup."""
    answers = iter([["127.0.0.1"]] + [["10.0.0.1"]] * 10)
    lookups = []

    def rebinding(host, port, timeout):
        lookups.append(host)
        return next(answers)

    assert fetcher(resolver=rebinding).fetch(f"http://rebind.example:{server.port}/image") == image
    assert lookups == ["rebind.example"]
    assert server.requests == [("/image", f"rebind.example:{server.port}")]


def test_tls_goes_to_the_checked_address_with_the_name_as_sni_and_certificate(server, tmp_path, image):
    server_tls, client_tls, seen = tls_pair(tmp_path, ["images.example"])
    resolver = lambda host, port, timeout: ["127.0.0.1"]  # noqa: E731
    with ImageServer(image, tls=server_tls) as https:
        got = fetcher(resolver=resolver, tls_context=client_tls).fetch(f"https://images.example:{https.port}/image")
        assert got == image
        assert seen == ["images.example"] and https.requests == [("/image", f"images.example:{https.port}")]
        # The certificate is checked against the URL's name, not the address connected to:
        with pytest.raises(UrlFetchError, match="certificate of other.example could not be verified"):
            fetcher(resolver=resolver, tls_context=client_tls).fetch(f"https://other.example:{https.port}/image")
        with pytest.raises(UrlFetchError, match="certificate of 127.0.0.1"):
            fetcher(tls_context=client_tls).fetch(https.url("/image"))
        # and by default against the system's CAs, which do not know the test CA:
        with pytest.raises(UrlFetchError, match="certificate of images.example"):
            fetcher(resolver=resolver).fetch(f"https://images.example:{https.port}/image")


# -- redirects -----------------------------------------------------------------------------------------------------
def test_up_to_three_redirects_are_followed(server, image):
    assert fetcher().fetch(server.url("/redirect/3")) == image
    assert [path for path, _ in server.requests] == ["/redirect/3", "/redirect/2", "/redirect/1", "/image"]


def test_a_fourth_redirect_is_refused(server):
    with pytest.raises(InvalidRequestError, match="redirects more than 3 times"):
        fetcher().fetch(server.url("/redirect/4"))
    assert len(server.requests) == 4  # the fourth redirect's target is never asked


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_each_redirect_status_is_followed(server, image, status):
    server.redirect("/moved", server.url("/image"), status=status)
    assert fetcher().fetch(server.url("/moved")) == image


@pytest.mark.parametrize("location", [
    "http://127.0.0.2:{port}/image", "http://localhost.localdomain.invalid:{port}/image", "http://[::1]:{port}/image",
    "http://10.0.0.1/image", "http://169.254.169.254/latest/meta-data/iam/", "http://[fd00:ec2::254]/latest/",
    "http://[::ffff:127.0.0.2]:{port}/image", "http://internal.example/image",
])
def test_a_redirect_to_a_host_that_is_not_allowed_is_refused(server, location):
    def resolver(host, port, timeout):
        return {"internal.example": ["10.1.2.3"], "localhost.localdomain.invalid": ["127.0.0.2"]}.get(
            host) or fetch.resolve(host, port, timeout)

    server.redirect("/away", location.format(port=server.port))
    with pytest.raises(InvalidRequestError, match="redirects to a host that is not on the public internet") as refused:
        fetcher(resolver=resolver).fetch(server.url("/away"))
    assert "10.1.2.3" not in str(refused.value) and "127.0.0.2" not in str(refused.value)
    assert [path for path, _ in server.requests] == ["/away"]


@pytest.mark.parametrize("location, reason", [
    ("file:///etc/passwd", "http"), ("ftp://127.0.0.1/a.jpg", "http"), ("gopher://127.0.0.1:70/", "http"),
    ("http://user:secret@127.0.0.1:{port}/image", "credentials"),
])
def test_a_redirect_to_a_refused_url_is_refused(server, location, reason):
    server.redirect("/away", location.format(port=server.port))
    with pytest.raises(InvalidRequestError, match=f"redirects to a URL that is refused: .*{reason}"):
        fetcher().fetch(server.url("/away"))


def test_a_redirect_without_location_is_a_fetch_failure(server):
    server.routes["/nowhere"] = (302, {}, b"")
    with pytest.raises(UrlFetchError, match="without a Location"):
        fetcher().fetch(server.url("/nowhere"))


# -- the byte limit, while streaming -----------------------------------------------------------------------------
def test_a_content_length_over_the_limit_is_refused_before_reading(server):
    started = time.monotonic()
    with pytest.raises(ImageTooLargeError, match="1000000000 bytes .*Content-Length"):
        fetcher(max_bytes=1000).fetch(server.url("/lying-length"))  # it would send 3 bytes and stall
    assert time.monotonic() - started < 2


def test_a_stream_over_the_limit_is_refused_as_soon_as_it_passes(server):
    started = time.monotonic()
    with pytest.raises(ImageTooLargeError, match="at most 100000 bytes"):
        fetcher(max_bytes=100_000).fetch(server.url("/endless"))  # never ends
    assert time.monotonic() - started < 3


def test_the_limit_itself_is_allowed(server):
    assert len(fetcher(max_bytes=4096).fetch(server.url("/large"))) == 4096
    with pytest.raises(ImageTooLargeError):
        fetcher(max_bytes=4095).fetch(server.url("/large"))


def test_the_settings_byte_limit_applies(server):
    settings = Settings.from_env({"IMGSEARCH_URL_ALLOW_PRIVATE": "true", "IMGSEARCH_MAX_IMAGE_BYTES": "4000"})
    with pytest.raises(ImageTooLargeError, match="IMGSEARCH_MAX_IMAGE_BYTES"):
        fetch.fetch_image(server.url("/large"), settings)


# -- timeouts -----------------------------------------------------------------------------------------------------
def test_a_server_that_never_answers_times_out(server):
    started = time.monotonic()
    with pytest.raises(UrlFetchError, match="did not answer within 0.5 s"):
        fetcher(read_timeout=0.5).fetch(server.url("/hang"))
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("path", ["/slow", "/slow-headers"])
def test_a_dripping_server_hits_the_deadline(server, path):
    """One byte every 0.2 s never trips a 1 s read timeout; the deadline of the whole fetch stops it."""
    started = time.monotonic()
    with pytest.raises(UrlFetchError, match="took more than 1.5 s"):
        fetcher(read_timeout=1.0, deadline=1.5).fetch(server.url(path))
    assert time.monotonic() - started < 4


def test_the_deadline_counts_redirects_and_lookups(server):
    def slow_resolver(host, port, timeout):
        time.sleep(0.4)
        return ["127.0.0.1"]

    with pytest.raises(UrlFetchError, match="took more than 1 s"):
        fetcher(resolver=slow_resolver, deadline=1.0).fetch(f"http://slow-dns.example:{server.port}/redirect/3")


def test_a_lookup_that_hangs_times_out(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: time.sleep(5))
    started = time.monotonic()
    with pytest.raises(UrlFetchError, match="looking up hangs.example took more than"):
        fetcher(deadline=0.5).fetch("http://hangs.example/a.jpg")
    assert time.monotonic() - started < 2


# -- failures of the far end -------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [400, 403, 404, 410, 500, 503])
def test_error_statuses_are_fetch_failures(server, status):
    with pytest.raises(UrlFetchError, match=f"127.0.0.1 answered HTTP {status}"):
        fetcher().fetch(server.url(f"/status/{status}"))


def test_a_name_that_does_not_resolve_is_a_fetch_failure(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    with pytest.raises(UrlFetchError, match="could not resolve the host no-such-host.invalid"):
        fetcher(address_allowed=lambda ip: True).fetch("http://no-such-host.invalid/a.jpg")


def no_such_host(host, *args, **kwargs):
    """getaddrinfo's answer for a name that does not exist (NXDOMAIN), without asking a DNS server."""
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_a_closed_port_is_a_fetch_failure():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UrlFetchError, match="could not connect to 127.0.0.1"):
        fetcher().fetch(f"http://127.0.0.1:{port}/a.jpg")


def test_whatever_the_body_is_comes_back_for_the_decoder_to_judge(server):
    assert fetcher().fetch(server.url("/text")).startswith(b"<!doctype html>")
