"""URL safety: only public http(s) hosts, however the address is spelled. No DNS: the resolver is injected."""

from __future__ import annotations

import ipaddress

import pytest

from metis_pytest.tools.safety import UnsafeURL, acheck_url, address_problem, check_url, parse_ipv4_literal
from metis_pytest.tools.web import ToolError

NAMES = {
    "example.com": ["93.184.215.14"],
    "www.example.org": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "intranet.test": ["10.1.2.3"],
    "router.test": ["192.168.1.1"],
    "mixed.test": ["93.184.215.14", "172.16.0.9"],
    "metadata.test": ["169.254.169.254"],
    "v6loop.test": ["::1"],
    "nothing.test": [],
}
LOOKED_UP: list[str] = []


def resolve(host: str) -> list[str]:
    LOOKED_UP.append(host)
    if host not in NAMES:
        raise ToolError(f"cannot resolve host {host!r}: unknown in this test", retryable=False)
    return NAMES[host]


PUBLIC = [
    "https://example.com/",
    "http://example.com:8080/path?q=1#frag",
    "HTTPS://EXAMPLE.COM/Upper",
    "https://www.example.org/a/b",
    "http://93.184.215.14/",
    "http://[2606:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",  # an IPv4-mapped public address is that public address
]


@pytest.mark.parametrize("url", PUBLIC)
def test_public_urls_pass(url: str) -> None:
    assert check_url(url, resolver=resolve) == url


REFUSED = [
    # (url, words the reason must contain)
    ("http://127.0.0.1/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://2130706433/", "loopback"),  # decimal
    ("http://0x7f000001/", "loopback"),  # hex
    ("http://0x7f.0.0.1/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),  # octal
    ("http://%31%32%37.0.0.1/", "loopback"),  # percent-encoded
    ("http://localhost:8000/", "loopback"),
    ("http://api.localhost/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped 127.0.0.1, a loopback"),
    ("http://[::ffff:7f00:1]/", "IPv4-mapped 127.0.0.1, a loopback"),
    ("http://[64:ff9b::a00:1]/", "NAT64 10.0.0.1, a private"),
    ("http://[2002:c0a8:101::1]/", "6to4 192.168.1.1, a private"),
    ("http://10.0.0.1/", "private"),
    ("http://10.255.255.255/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://172.31.255.254/", "private"),
    ("http://192.168.0.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://239.255.255.250/", "multicast"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://100.64.0.1/", "not a public address"),  # shared address space (carrier NAT)
    ("http://[::]/", "unspecified"),
    ("http://[fc00::1]/", "private"),
    ("http://[fd12:3456::1]/", "private"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fe80::1%25eth0]/", "link-local"),
    ("http://[ff02::1]/", "multicast"),
    ("http://intranet.test/", "intranet.test resolves to 10.1.2.3, a private"),
    ("http://router.test/", "192.168.1.1, a private"),
    ("http://mixed.test/", "172.16.0.9, a private"),  # one bad address is enough
    ("http://metadata.test/", "link-local"),
    ("http://v6loop.test/", "loopback"),
    ("http://nothing.test/", "resolves to no address"),
    ("ftp://example.com/file", "only http and https"),
    ("file:///etc/passwd", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("gopher://example.com/", "only http and https"),
    ("example.com/no-scheme", "only http and https"),
    ("http:///no-host", "no host"),
    ("https://", "no host"),
    ("http://:80/", "no host"),
    ("", "not a URL"),
    ("http://example.com:99999/", "not a valid URL"),
    ("http://256.1.1.1/", "out-of-range"),
    ("http://1.2.3.4.5/", "malformed"),
    ("http://0x1g.0.0.1/", "malformed"),
    ("http://exa mple.com/", "not a valid host name"),
    ("http://example.com/\r\nHost: evil", "control characters"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_unsafe_urls_are_refused_with_a_one_line_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeURL) as caught:
        check_url(url, resolver=resolve)
    message = str(caught.value)
    assert reason in message
    assert "\n" not in message and "\r" not in message
    assert caught.value.retryable is False
    assert isinstance(caught.value, ToolError)


async def test_async_variant_runs_the_resolver_and_agrees() -> None:
    assert await acheck_url("https://example.com/x", resolver=resolve) == "https://example.com/x"
    with pytest.raises(UnsafeURL, match="private"):
        await acheck_url("http://intranet.test/", resolver=resolve)
    with pytest.raises(UnsafeURL, match="loopback"):
        await acheck_url("http://0x7f000001/", resolver=resolve)


def test_literal_addresses_never_reach_the_resolver() -> None:
    LOOKED_UP.clear()
    for url in ("http://127.1/", "http://[::1]/", "http://93.184.215.14/"):
        try:
            check_url(url, resolver=resolve)
        except UnsafeURL:
            pass
    assert LOOKED_UP == []


def test_resolve_false_checks_form_and_literals_only() -> None:
    assert check_url("https://unknown-name.test/", resolve=False) == "https://unknown-name.test/"
    with pytest.raises(UnsafeURL):
        check_url("http://127.1/", resolve=False)
    with pytest.raises(UnsafeURL):
        check_url("ftp://example.com/", resolve=False)


def test_a_resolver_failure_is_a_tool_error_not_a_pass() -> None:
    with pytest.raises(ToolError, match="cannot resolve"):
        check_url("https://unknown-name.test/", resolver=resolve)


@pytest.mark.parametrize(("host", "address"), [
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"), ("0177.0.0.01", "127.0.0.1"),
    ("10.1", "10.0.0.1"), ("192.168.257", "192.168.1.1"), ("1.2.3.4.", "1.2.3.4"), ("0x", "0.0.0.0"),
])
def test_ipv4_literal_forms(host: str, address: str) -> None:
    assert parse_ipv4_literal(host) == ipaddress.IPv4Address(address)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.example", "a1.b2"])
def test_names_are_not_ipv4_literals(host: str) -> None:
    assert parse_ipv4_literal(host) is None


def test_address_problem_of_public_addresses_is_none() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"):
        assert address_problem(ipaddress.ip_address(text)) is None
