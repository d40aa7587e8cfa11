"""Which files a request may read: only the one Cog downloaded, or decoded from a data URL, for it.

A `Path` input (`texts_file`) reaches predict() in one of two ways, as coglet 0.23 serves it:
- given as a URL or a data URL, Cog writes it to a new temporary file before predict() runs
  (`cog.types.URLPath.convert`: `tempfile.NamedTemporaryFile` in the worker's temp folder) and hands over
  that file's path;
- given as any other string, the string itself is handed over: `"/etc/passwd"`, `"/proc/self/fd/49"` (a
  neighbour's upload, open in the same worker) or `"/dev/stdin"` (the worker's pipe from the server).
Both arrive as paths, so the path alone cannot say which it was. `watch` wraps `convert` to record each file
Cog writes in this process, and `Downloads.claim` lets a request read a path only if it is one of those, and
only once: whatever else a request names is refused before anything is opened. files.py then opens the file
without following links and reads it only if it is a regular file.

`convert` is also where a URL is fetched, so the wrapper refuses first a URL whose host is, or resolves to, an
address that is not public (loopback, private ranges, link-local such as a cloud's metadata service): a user
must not make the container fetch from the network it sits in. That check sees the name as the download
will see it; once the request is made (a redirect followed), the address it reached is checked again before
a byte of the body is copied. So a redirect or a name that resolves differently can make the container send
a GET to an internal address, never read its answer: an egress policy around the container is the control
that stops the request itself (docs/reliability.md, "Security").
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import InputError

# Downloads recorded but not yet claimed: a request whose download finished and which then failed or was
# cancelled before predict() never claims its file. Oldest are forgotten first; Cog deletes the files.
MAX_UNCLAIMED = 1_000
ALLOW_PRIVATE_URLS = "E5_ALLOW_PRIVATE_URLS"  # =1: an operator whose files sit on an internal host allows them


class Downloads:
    """The files Cog wrote for `Path` inputs in this process, each readable by one request."""

    def __init__(self):
        self._unclaimed: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()  # convert() runs on Cog's download threads, claim() on the event loop

    def record(self, path: str | os.PathLike) -> None:
        with self._lock:
            self._unclaimed[os.fspath(path)] = None
            while len(self._unclaimed) > MAX_UNCLAIMED:
                self._unclaimed.popitem(last=False)

    def claim(self, value: object, name: str = "texts_file") -> Path | None:
        """The file Cog downloaded for this request (None for none: None, or the "" an untouched form sends), or
        InputError naming the input: nothing is opened."""
        if value is None or value == "":
            return None
        path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
        with self._lock:
            if path is not None and path in self._unclaimed:
                del self._unclaimed[path]
                return Path(path)
        raise InputError(
            f"`{name}` must be a file you upload (a data: URL, `cog predict -i {name}=@file`) or an http(s) URL; "
            "a path on the server is never read",
            "bad_file",
        )


DOWNLOADS = Downloads()  # one per process: Cog's downloads and predict() run in the same worker


def private_urls_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """E5_ALLOW_PRIVATE_URLS: 1 allows URLs on internal hosts, 0 or unset refuses them; anything else stops setup."""
    raw = (os.environ if environ is None else environ).get(ALLOW_PRIVATE_URLS, "").strip()
    if raw not in ("", "0", "1"):
        raise ValueError(f"{ALLOW_PRIVATE_URLS} must be 1 (allow URLs on internal hosts) or 0, got {raw!r}")
    return raw == "1"


def public_url(url: str, resolve: Callable = socket.getaddrinfo, name: str = "texts_file") -> None:
    """Refuse an http(s) URL whose host is, or resolves to, an address that is not public.

    A name that does not resolve is left to the download, which fails with its own message.
    """
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return
    try:
        addresses = {info[4][0] for info in resolve(host, None)}
    except (OSError, UnicodeError):
        return
    if not all(is_public(address) for address in addresses):
        raise private_url(url, name)


def private_url(url: str, name: str = "texts_file") -> InputError:
    host = urllib.parse.urlsplit(url).hostname
    return InputError(
        f"`{name}` is a URL on a private or local address ({host}); this container fetches only public URLs: upload "
        f"the file instead (an operator can allow internal hosts with {ALLOW_PRIVATE_URLS}=1)",
        "private_url",
    )


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone (`fe80::1%eth0`) is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def peer_address(response: object) -> str | None:
    """The address a streamed `requests` response came from (after any redirect), or None if it cannot be seen.

    Read through the standard library's socket chain (urllib3 response -> http.client response -> socket).
    """
    try:
        return response._fp.fp.raw._sock.getpeername()[0]
    except (AttributeError, OSError, IndexError, TypeError):
        return None


def watch(url_path_type: type, downloads: Downloads = DOWNLOADS, allow_private: bool = False) -> None:
    """Wrap Cog's `URLPath.convert` (idempotent): URLs checked first, every file it writes recorded."""
    convert = getattr(url_path_type.convert, "__wrapped__", url_path_type.convert)

    def checked_convert(self):
        source = getattr(self, "source", "")
        if source.startswith(("http://", "https://")) and not allow_private:
            public_url(source)  # before any connection
            # Cog's URLFile sends the request on first use: here, before convert() copies a byte. The address it
            # reached is checked too, which covers a redirect and a name that resolved differently a moment ago.
            peer = peer_address(self.fileobj)
            if peer is not None and not is_public(peer):
                raise private_url(source)
        path = convert(self)
        downloads.record(path)
        return path

    checked_convert.__wrapped__ = convert
    url_path_type.convert = checked_convert
