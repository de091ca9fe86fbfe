"""URLs as the web connector compares them: one canonical spelling, the origin, and which
links are not pages."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import urljoin, urlsplit, urlunsplit

# Links to these are not pages; a crawl does not request them.
NOT_PAGES = re.compile(
    r"\.(png|jpe?g|gif|svg|webp|ico|bmp|pdf|zip|gz|tgz|bz2|xz|tar|rar|7z|mp3|mp4|webm|mov|avi|"
    r"woff2?|ttf|otf|eot|css|js|mjs|map|json|xml|rss|atom|exe|msi|dmg|iso|deb|rpm|apk|jar)$",
    re.I,
)


def normalize_url(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL in one canonical spelling, or None when it is not one.

    Lower-case scheme and host, no default port, no fragment, no user info (credentials
    never end up in a document id), and ``/`` for an empty path.
    """
    try:
        joined = urljoin(base, url.strip()) if base else url.strip()
        parts = urlsplit(joined)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https") or not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def title_from_url(url: str) -> str:
    """A title for a page that has none: its file name, words apart."""
    name = PurePosixPath(urlsplit(url).path).name
    name = re.sub(r"\.(html?|php|aspx?|md|txt)$", "", name, flags=re.I)
    return re.sub(r"[-_]+", " ", name).strip() or urlsplit(url).netloc
