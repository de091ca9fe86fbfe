"""The configuration, as pydantic models. ``config/kbot.yaml`` is validated against these."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.base import ConnectorConfig, resolve_path

_INTERVAL = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SQLITE = "sqlite:///"
# Must equal indexer.embeddings.DEFAULT_MODEL; not imported so loading a config stays light.
BUNDLED_MODEL = "all-MiniLM-L6-v2"


def parse_schedule(value: str) -> tuple[str, int | str]:
    """``("interval", seconds)`` for ``15m``-style values, ``("cron", expr)`` for crontab lines."""
    m = _INTERVAL.match(value)
    if m:
        seconds = int(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        if seconds <= 0:
            raise ValueError(f"interval {value!r} must be positive")
        return "interval", seconds
    try:
        cron_trigger(value.strip())
    except ValueError as e:
        raise ValueError(
            f"{value!r} is neither an interval (like '30m', '1h', '1d') nor a valid "
            f"5-field cron expression like '0 * * * *' ({e})"
        ) from e
    return "cron", value.strip()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolConfig(_Section):
    """The SQL connection pool (PostgreSQL and other servers; SQLite has none to size)."""

    size: int = Field(default=5, ge=1, le=200, description="connections kept open per process")
    max_overflow: int = Field(
        default=10, ge=0, le=500, description="extra connections opened under load"
    )
    timeout_s: float = Field(
        default=30, gt=0, le=600, description="wait for a free connection before failing"
    )
    recycle_s: int = Field(
        default=1800, ge=-1, description="reopen connections older than this (-1: never)"
    )
    retry_s: float = Field(
        default=15,
        ge=0,
        le=300,
        description="how long a write whose connection was lost is retried (a restart)",
    )


class StorageConfig(_Section):
    data_dir: Path = Field(
        default=Path(".kbot"),
        validate_default=True,
        description="embedded Chroma, git checkouts; default: .kbot next to the config file",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite at <data_dir>/kbot.db"
    )
    chroma_url: str | None = Field(
        default=None,
        description="a `chroma run` server (http://host:port); default: embedded Chroma in "
        "<data_dir>/chroma. With a server, web processes keep no index on disk",
    )
    chroma_token: SecretStr | None = Field(
        default=None, description="the Chroma server's auth token; ${ENV}"
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis (redis://host:6379/0) for state web processes share: the generated "
        "answer cache; default: each process keeps its own",
    )
    auto_migrate: bool | None = Field(
        default=None,
        description="migrate the schema at start-up; default: yes on SQLite, no elsewhere "
        "(run `kbot db upgrade`)",
    )
    pool: PoolConfig = Field(default_factory=PoolConfig)

    @field_validator("data_dir")
    @classmethod
    def _resolve(cls, v: Path, info: ValidationInfo) -> Path:
        return resolve_path(v, info)

    @field_validator("database_url")
    @classmethod
    def _resolve_sqlite(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Like every other relative path in the file, a relative SQLite path means
        # "next to the config file", not "wherever kbot happens to be started".
        if v is None or not v.startswith(_SQLITE):
            return v
        file, sep, query = v.removeprefix(_SQLITE).partition("?")
        if not file or file == ":memory:" or Path(file).is_absolute():
            return v
        return f"{_SQLITE}{resolve_path(Path(file), info)}{sep}{query}"

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'kbot.db'}"

    @property
    def migrates(self) -> bool:
        """Whether processes bring the schema up to date themselves at start-up."""
        if self.auto_migrate is not None:
            return self.auto_migrate
        return self.sqlalchemy_url.startswith("sqlite")

    @field_validator("chroma_url")
    @classmethod
    def _chroma_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        u = urlsplit(v.strip())
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"must be an http(s) URL such as http://127.0.0.1:8000, not {v!r}")
        try:
            u.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as e:
            raise ValueError(f"has a bad port: {v!r}") from e
        return v.strip().rstrip("/")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None  # an unset ${REDIS_URL:-}
        if urlsplit(v.strip()).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"must be a redis://, rediss:// or unix:// URL, not {v!r}")
        return v.strip()

    @field_validator("chroma_token")
    @classmethod
    def _token_not_blank(cls, v: SecretStr | None) -> SecretStr | None:
        # An unset ${ENV_VAR:-} means no token, not an empty one.
        return v if v is None or v.get_secret_value().strip() else None

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"


class EmbeddingConfig(_Section):
    model: str = Field(
        default=BUNDLED_MODEL,
        description=f"{BUNDLED_MODEL!r} (bundled) or a local sentence-transformers model folder",
    )
    backend: Literal["torch", "onnx", "onnx-int8"] = Field(
        default="onnx",
        description="the encoder: torch (fp32), onnx (fp32 on ONNX Runtime) or onnx-int8 "
        "(int8-quantised, fastest); both ONNX ones are exported once into data_dir/models. "
        "Changing it re-indexes everything",
    )
    batch_size: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="texts per encoder call: 16 measured fastest on 2 cores, and keeps "
        "ONNX Runtime's memory low (docs/BENCHMARKS.md)",
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="the encoder's threads (default: the backend's own, one per core)",
    )

    @field_validator("model")
    @classmethod
    def _resolve_folder(cls, v: str, info: ValidationInfo) -> str:
        return v if v == BUNDLED_MODEL else str(resolve_path(Path(v), info))


class IndexerConfig(_Section):
    chunk_size: int = Field(default=1000, ge=200, le=8000, description="characters")
    chunk_overlap: int = Field(default=100, ge=0, le=2000)
    max_delete_fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="a sync that would delete more than this share of a connector's documents "
        "is refused (the source is probably down)",
    )


class AnsweringConfig(_Section):
    top_k: int = Field(default=25, ge=1, le=50, description="chunks given to the answerer")
    min_score: float = Field(
        default=0.45, ge=0, le=1, description="below this best similarity the bot abstains"
    )
    max_sources: int = Field(default=3, ge=1, le=10, description="citations in one answer")
    stale_after: int = Field(
        default=365,
        ge=0,
        description="days after which a cited document's age is shown beside it (0: never)",
    )
    max_question_chars: int = Field(default=2000, ge=10)


class RetrievalConfig(_Section):
    mode: Literal["hybrid", "dense", "lexical"] = Field(
        default="hybrid", description="vectors and BM25 keywords fused, or either alone"
    )
    fusion: Literal["weighted", "rrf"] = Field(
        default="weighted",
        description="weighted: min-max normalised scores mixed by dense_weight; "
        "rrf: reciprocal rank fusion",
    )
    dense_weight: float = Field(default=0.5, ge=0, le=1)
    title_weight: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="weighted fusion: added times the share of a document title's words "
        "the question uses",
    )
    candidates: int = Field(
        default=40, ge=1, le=500, description="results taken from each retriever before fusion"
    )


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)


def _audience(name: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise ValueError(
            f"{name!r} is not an audience name (letters, digits, '_', '.', '-', as in a "
            "connector's audience)"
        )
    return name


# An audience name, as in a connector's ``audience``.
Audience = Annotated[str, AfterValidator(_audience)]


class SlackConfig(_Section):
    """Where the Slack Web API is, and which audiences each Slack channel may read."""

    api_base_url: str = Field(
        default="https://slack.com/api/", pattern=r"^https?://", description="the Web API base"
    )
    channels: dict[str, list[Audience]] = Field(
        default_factory=dict,
        description="Slack channel id -> audiences its questions may read ('public' always)",
    )
    dm_audiences: list[Audience] = Field(
        default_factory=list, description="audiences of direct messages; default: public only"
    )
    escalation_channel: str | None = Field(
        default=None, description="named in abstentions, e.g. '#ask-sre' or a channel id"
    )
    suggested_prompts: list[str] = Field(
        default_factory=list,
        description="offered in a new assistant thread; default: the most asked questions",
    )


class TeamsConfig(_Section):
    """Which audiences each Teams place may read, and how answers are delivered there."""

    channels: dict[str, list[Audience]] = Field(
        default_factory=dict,
        description="Teams channel id, or team id / team group id meaning all of its channels "
        "-> audiences its questions may read ('public' always)",
    )
    chat_audiences: list[Audience] = Field(
        default_factory=list, description="audiences of 1:1 and group chats; default: public only"
    )
    escalation_channel: str | None = Field(
        default=None, description="named in abstentions, e.g. 'the SRE team's Help channel'"
    )
    working_after_s: float = Field(
        default=5,
        ge=0,
        le=10,
        description="an answer slower than this is preceded by a 'working on it' message that "
        "is then updated (Teams gives a bot 15 s)",
    )
    feedback_loop: bool = Field(
        default=True,
        description="Teams' built-in 👍/👎 on answers; false: 👍/👎 buttons on the card",
    )
    streaming: bool = Field(
        default=True,
        description="with llm:, stream generated answers in 1:1 chats (Teams streams only "
        "there); false: post and update as in channels",
    )
    stream_update_s: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="the shortest time between two streamed updates (Teams throttles a bot "
        "to about one a second)",
    )
    suggested_prompts: list[str] = Field(
        default_factory=list,
        description="questions offered with one tap in the 1:1 chat's welcome; default: the "
        "most asked questions in the query log",
    )
    openid_metadata_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="where the Bot Framework's token signing keys are published; "
        "default: the public cloud's (override for tests or another cloud)",
    )


class ModelPrice(_Section):
    """What a model costs, in USD per million tokens."""

    input: float = Field(ge=0, description="USD per million input tokens")
    output: float = Field(ge=0, description="USD per million output tokens")
    cached: float | None = Field(
        default=None, ge=0, description="USD per million cached input tokens; default: input"
    )


# List prices of common hosted models (USD per million tokens), used when ``llm.prices``
# does not name the model. A model is matched by its longest listed prefix, so dated
# snapshots ("gpt-4o-mini-2024-07-18") take their family's price.
DEFAULT_PRICES: dict[str, ModelPrice] = {
    name: ModelPrice(input=i, output=o, cached=c)
    for name, (i, o, c) in {
        "gpt-4o-mini": (0.15, 0.60, 0.075),
        "gpt-4o": (2.50, 10.00, 1.25),
        "gpt-4.1-nano": (0.10, 0.40, 0.025),
        "gpt-4.1-mini": (0.40, 1.60, 0.10),
        "gpt-4.1": (2.00, 8.00, 0.50),
        "o4-mini": (1.10, 4.40, 0.275),
        "claude-3-5-haiku": (0.80, 4.00, 0.08),
        "claude-3-5-sonnet": (3.00, 15.00, 0.30),
        "claude-3-7-sonnet": (3.00, 15.00, 0.30),
        "claude-sonnet-4": (3.00, 15.00, 0.30),
        "claude-haiku-4-5": (1.00, 5.00, 0.10),
    }.items()
}


def lookup_price(model: str, prices: dict[str, ModelPrice] | None = None) -> ModelPrice | None:
    """The price of ``model`` from ``prices`` over ``DEFAULT_PRICES``, matched exactly, else
    by the longest prefix; None when unknown."""
    name = model.lower()
    table = {k.lower(): v for k, v in [*DEFAULT_PRICES.items(), *(prices or {}).items()]}
    if name in table:
        return table[name]
    prefixes = [k for k in table if name.startswith(k)]
    return table[max(prefixes, key=len)] if prefixes else None


LLMProvider = Literal["openai", "azure_openai", "anthropic", "ollama", "openai_compatible"]


class LLMConfig(_Section):
    """The chat model that writes generated answers; without it answers are extractive."""

    provider: LLMProvider = Field(
        description="openai, azure_openai, anthropic, ollama, or openai_compatible (any server "
        "speaking OpenAI's chat completions at base_url: vLLM, llama.cpp, LM Studio)"
    )
    model: str = Field(min_length=1, description="the provider's model name, e.g. gpt-4o-mini")
    base_url: str | None = Field(
        default=None, pattern=r"^https?://", description="the API's address; default: provider's"
    )
    api_key: str | None = Field(
        default=None, repr=False, description="write ${ENV_VAR}; never the key itself"
    )
    temperature: float = Field(default=0, ge=0, le=2)
    timeout_s: float = Field(default=20, gt=0, le=600, description="per model call")
    max_output_tokens: int = Field(default=800, ge=16, le=32768)
    max_retries: int = Field(
        default=2, ge=0, le=10, description="retries after a rate limit (429) or server error"
    )
    retry_max_wait_s: float = Field(
        default=5, ge=0, le=60, description="the longest wait before one retry (Retry-After)"
    )
    breaker_failures: int = Field(
        default=3, ge=1, le=100, description="consecutive failures that stop calls to the model"
    )
    breaker_cooldown_s: float = Field(
        default=60, gt=0, le=3600, description="how long calls stay stopped before a trial call"
    )
    sources: int = Field(
        default=5, ge=1, le=20, description="retrieved passages given to the model, best first"
    )
    cache: bool = Field(
        default=True,
        description="serve a repeated question the same generated answer until the index changes",
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="model -> USD per million input/output/cached tokens; overrides the "
        "built-in list prices",
    )

    @model_validator(mode="after")
    def _needs_base_url(self) -> LLMConfig:
        if self.provider in ("openai_compatible", "azure_openai") and not self.base_url:
            raise ValueError(f"provider {self.provider!r} needs base_url (the server's address)")
        return self

    def price(self, model: str | None = None) -> ModelPrice | None:
        """The price of ``model`` (default: the configured one) from ``prices`` over the
        built-in list, matched exactly, else by the longest prefix; None when unknown."""
        return lookup_price(model or self.model, self.prices)


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def cron_trigger(expr: str, timezone: str = "UTC") -> Any:  # -> CronTrigger
    """An APScheduler trigger for a 5-field crontab line. Weekdays are numbered as in
    crontab (0 or 7 is Sunday, 1 Monday): APScheduler 3's ``from_crontab`` counts from
    Monday = 0, so they are turned into day names first."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"got {len(fields)} fields, expected 5")
    minute, hour, day, month, weekdays = fields
    return CronTrigger(
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_crontab_weekdays(weekdays),
        timezone=timezone,
    )


def _crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (``1``, ``1-5``, ``*/2``, ``sat,sun``) as day names."""
    if field == "*":
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first, last = (_weekday(d) for d in span.split("-", 1))
        else:
            first = _weekday(span)
            last = 6 if step else first
        every = int(step) if step.isdigit() else 0 if step else 1
        if every < 1 or last < first:
            raise ValueError(f"day of week {part!r} is not a valid range or step")
        days.update(d % 7 for d in range(first, last + 1, every))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def _weekday(token: str) -> int:
    if token.isdigit() and int(token) <= 7:
        return int(token)
    if token[:3] in _WEEKDAYS:
        return _WEEKDAYS.index(token[:3])
    raise ValueError(f"{token!r} is not a day of the week (0-7 or sun..sat)")


class DigestConfig(_Section):
    """The scheduled digest of the report, posted to a Slack channel and/or a Teams channel."""

    schedule: str = Field(
        default="0 9 * * 1",
        description="a 5-field cron line in ``timezone``; default Mondays at 09:00",
    )
    timezone: str = Field(default="UTC", description="an IANA time zone, e.g. Europe/Berlin")
    since: str = Field(
        default="7d", pattern=r"^\s*\d+\s*[dw]\s*$", description="the days covered, e.g. 7d"
    )
    slack_channel: str | None = Field(
        default=None, min_length=1, description="a Slack channel id (C0123...) to post to"
    )
    teams_conversation: str | None = Field(
        default=None,
        min_length=1,
        description="a Teams channel or chat id (19:...@thread.tacv2) to post to",
    )
    teams_service_url: str = Field(
        default="https://smba.trafficmanager.net/teams/",
        pattern=r"^https?://",
        description="the Bot Connector address for proactive messages (public cloud default)",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _valid_cron(self) -> DigestConfig:
        try:
            self.trigger()
        except ValueError as e:
            raise ValueError(
                f"schedule {self.schedule!r} is not a 5-field cron line like '0 9 * * 1' ({e})"
            ) from None
        return self

    def trigger(self) -> Any:  # -> apscheduler.triggers.cron.CronTrigger
        """When the digest is posted (crontab weekday numbers: 1 is Monday)."""
        return cron_trigger(self.schedule, self.timezone)

    @property
    def enabled(self) -> bool:
        return bool(self.slack_channel or self.teams_conversation)


class ReportsConfig(_Section):
    """Who may open ``/reports``, what the report may show, and the scheduled digest."""

    admin_token: SecretStr | None = Field(
        default=None, description="write ${ENV_VAR}; Bearer token, ?token= or the login form"
    )
    username: str | None = Field(default=None, min_length=1, description="basic auth user")
    password: SecretStr | None = Field(default=None, description="basic auth password; ${ENV}")
    redact: Literal["none", "hash", "redact"] = Field(
        default="none",
        description="question text and user ids in reports and the digest: shown, replaced by "
        "a stable short hash, or removed",
    )
    hash_key: SecretStr | None = Field(
        default=None,
        description="the key of redact: hash; default: a random key kept in "
        "<data_dir>/reports.key (set it where several machines must agree)",
    )
    stale_after_days: int = Field(
        default=180, ge=1, description="a cited document unchanged for longer is stale"
    )
    base_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="where people open kbot serve, e.g. https://kbot.example.com; links in "
        "the digest and in reports written by the CLI point there",
    )
    digest: DigestConfig = Field(default_factory=DigestConfig)

    @field_validator("admin_token", "password", "hash_key")
    @classmethod
    def _not_blank(cls, v: SecretStr | None) -> SecretStr | None:
        # An unset ${ENV_VAR:-} must switch the page off, not accept an empty secret.
        return v if v is None or v.get_secret_value().strip() else None

    @model_validator(mode="after")
    def _user_and_password(self) -> ReportsConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("basic auth needs both username and password (or neither)")
        return self

    @property
    def enabled(self) -> bool:
        """Whether ``/reports`` is served: only with a credential to protect it."""
        return self.admin_token is not None or self.password is not None


class ObservabilityConfig(_Section):
    """Logs and traces for operators (``/metrics`` needs no settings)."""

    json_logs: bool = Field(
        default=False,
        description="log one JSON object per line (ts, level, logger, message, request_id, "
        "query_id); default: plain text. `kbot --log-json` turns it on too",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="an OTLP/HTTP collector, e.g. http://otel-collector:4318: spans of the "
        "answer pipeline go to <endpoint>/v1/traces (needs the kbot[otel] extra); default: off",
    )


class RateLimitConfig(_Section):
    """How many questions the bot answers per user and per channel in a window; over it,
    the asker gets a friendly note saying when to try again. Counted in Redis when
    ``storage.redis_url`` is set (across web processes), else per process."""

    per_user: int | None = Field(
        default=30, ge=1, description="questions from one person per window; null: no limit"
    )
    per_channel: int | None = Field(
        default=120,
        ge=1,
        description="questions in one channel or chat per window; null: no limit",
    )
    window_s: int = Field(default=60, ge=1, le=86400, description="the window, in seconds")


class FeedbackConfig(_Section):
    """How 👍/👎 and leads' curations change what later askers are shown.

    A 👎 with reason wrong, outdated or irrelevant sources counts against the documents
    its answer cited, a 👍 for them, on that question and on close ones (question
    embeddings' cosine of at least ``close``), only for askers with the same audiences.
    Votes move a document a bounded number of places among the documents retrieved, never
    out of them (docs/EVALUATION.md, "Feedback in ranking")."""

    ranking: bool = Field(default=True, description="votes move documents in ranking")
    close: float = Field(
        default=0.7,
        ge=0.5,
        le=1,
        description="question embeddings' cosine over which two questions share votes "
        "and curations",
    )
    min_voters: int = Field(
        default=2, ge=1, le=100, description="distinct voters before votes move a document"
    )
    half_life_days: float = Field(
        default=90, gt=0, description="a vote's weight halves with every this many days"
    )
    max_up: int = Field(default=2, ge=0, le=10, description="places votes can lift a document")
    max_down: int = Field(default=1, ge=0, le=10, description="places votes can lower a document")
    margin: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="votes move a document only past documents this close to it in meaning",
    )
    review_below: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="answers whose best passage is less similar than this go to the review "
        "queue (with abstentions and 👎)",
    )
    post_corrections: bool = Field(
        default=False,
        description="a reviewer may post a corrected answer into the original thread",
    )


class KbotConfig(_Section):
    storage: StorageConfig = Field(default_factory=StorageConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    indexer: IndexerConfig = Field(default_factory=IndexerConfig)
    answering: AnsweringConfig = Field(default_factory=AnsweringConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    slack: SlackConfig = Field(default_factory=SlackConfig)
    teams: TeamsConfig = Field(default_factory=TeamsConfig)
    llm: LLMConfig | None = Field(
        default=None, description="a chat model for generated answers; none: extractive"
    )
    reports: ReportsConfig = Field(default_factory=ReportsConfig)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    connectors: list[ConnectorConfig] = Field(default_factory=list)
    # Where this config was read from, for messages.
    source: str = Field(default="<memory>", exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _every_section(cls, data: Any) -> Any:
        # A section left out would be built by its default factory, outside this validation
        # and its context, so its relative defaults (data_dir) would not resolve against the
        # config file's folder.
        if not isinstance(data, dict):
            return data
        sections = ("storage", "embedding", "indexer", "answering", "server")
        return {**dict.fromkeys(sections, {}), **data}

    def connector(self, name: str) -> ConnectorConfig:
        for c in self.connectors:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.connectors) or "none"
        raise KeyError(f"no connector named {name!r} in {self.source} (configured: {known})")
