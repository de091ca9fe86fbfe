"""The web connector's configuration block: where the site is, how far to read, and how
politely."""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import ConnectorConfig
from connectors.http import RetryFields
from connectors.web.urls import normalize_url, origin


class WebConfig(ConnectorConfig, RetryFields):
    type: Literal["web"]
    sitemap_url: str | None = Field(
        default=None, description="e.g. https://docs.example.com/sitemap.xml (or a sitemap index)"
    )
    start_urls: list[str] = Field(
        default_factory=list, description="pages to crawl from, instead of a sitemap"
    )
    allowed_prefix: str | None = Field(
        default=None,
        description="only URLs starting with this are read; default: the sitemap's site, or "
        "the folder of the first start URL",
    )
    max_pages: int = Field(default=1000, ge=1, le=100_000)
    max_depth: int = Field(
        default=5, ge=0, le=100, description="link hops from a start URL (start_urls only)"
    )
    concurrency: int = Field(default=2, ge=1, le=16, description="requests in flight at once")
    delay_s: float = Field(
        default=0.25, ge=0, le=60, description="at least this long between two requests"
    )
    timeout_s: float = Field(default=20, gt=0, le=300, description="per request")
    max_consecutive_failures: int = Field(
        default=10,
        ge=1,
        le=10_000,
        description="pages failing in a row that mean the site is down: the sync stops",
    )
    respect_robots_txt: bool = True
    trust_lastmod: bool = Field(
        default=True,
        description="skip requesting a sitemap page whose lastmod has not changed",
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        repr=False,
        description="sent to the site's own origin only, e.g. Authorization: Bearer ${DOCS_TOKEN}",
    )

    @field_validator("sitemap_url", "allowed_prefix")
    @classmethod
    def _absolute_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        url = normalize_url(v)
        if url is None:
            raise ValueError("must be an absolute http:// or https:// URL")
        return url

    @field_validator("start_urls")
    @classmethod
    def _absolute_urls(cls, v: list[str]) -> list[str]:
        out = []
        for i, u in enumerate(v):
            url = normalize_url(u)
            if url is None:
                raise ValueError(f"item {i}: must be an absolute http:// or https:// URL")
            if url not in out:
                out.append(url)
        return out

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in v.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in ("host", "user-agent", "if-none-match", "if-modified-since"):
                raise ValueError(f"header {name!r} is set by kbot itself")
            if re.search(r"[\r\n]", value.get_secret_value()):
                raise ValueError(f"header {name!r}: the value must be one line")
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> WebConfig:
        if bool(self.sitemap_url) == bool(self.start_urls):
            raise ValueError("set either sitemap_url or start_urls (one of them, not both)")
        if self.sitemap_url and "max_depth" in self.model_fields_set:
            raise ValueError("max_depth applies to start_urls crawls only, not to a sitemap")
        if self.start_urls:
            prefix = self.scope
            outside = [u for u in self.start_urls if not u.startswith(prefix)]
            if outside:
                raise ValueError(
                    f"start URL {outside[0]} is outside allowed_prefix {prefix}; "
                    "widen allowed_prefix or fix the start URL"
                )
        return self

    @property
    def scope(self) -> str:
        """The URL prefix every page read must start with."""
        if self.allowed_prefix:
            return self.allowed_prefix
        if self.sitemap_url:
            return origin(self.sitemap_url) + "/"
        first = urlsplit(self.start_urls[0])
        folder = first.path.rsplit("/", 1)[0] + "/"
        return urlunsplit((first.scheme, first.netloc, folder, "", ""))
