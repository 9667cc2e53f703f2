"""The configuration schema: every key the registry reads, its type, default and checks.

This is the one place that knows the configuration. The file, the REGISTRY_* environment
variables and the command-line flags are all validated against it (registry/config/loading.py),
and the rest of the registry receives typed, checked sections, never raw values. Keys are
Distribution's where it has them, so an existing `config.yml` works; keys Distribution has and
this registry deliberately does not implement are listed in IGNORED, and startup warns about
each one that is set.

To add a key: add a field to its section (a `Section` subclass, so unknown keys are errors),
with a type from registry/config/values.py, its default, and a comment saying what it means;
document it in the README's configuration table. Names are lower case without separators, as
Distribution's (`draintimeout`), because `_` separates levels in environment variable names.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from ..references import check_name
from ..errors import RegistryError
from .values import (
    Address,
    Bool,
    Duration,
    LogLevel,
    Natural,
    PositiveDuration,
    Network,
    Regex,
    Secret,
    SecretList,
    Size,
    Str,
    StrList,
    Url,
    parse_bool,
    split_address,
)

#: Distribution's keys this registry accepts and ignores, with why; startup warns about each one set
IGNORED: dict[str, str] = {
    "loglevel": "deprecated in Distribution; use log.level",
    "log.hooks": "log hooks (mail) are not supported; ship the logs with your log collector",
    "log.reportcaller": "not supported",
    "http.relativeurls": "Location headers are relative unless http.host is set",
    "http.http2": "the server speaks HTTP/1.1; put an HTTP/2 proxy in front if you need it",
    "http.h2c": "the server speaks HTTP/1.1",
    "http.tls.clientauth": "with clientcas, client certificates are always required and verified",
    "http.tls.ciphersuites": "Python's default TLS 1.2+ cipher suites are used",
    "http.tls.letsencrypt": "not supported; use certificate and key (e.g. from certbot)",
    "storage.cache": "blob descriptors are cached in process, bounded (see the README's Limits)",
    "storage.tag": "tag lookups need no concurrency setting",
    "storage.filesystem.maxthreads": "filesystem I/O runs in a bounded thread pool",
    "storage.s3.v4auth": "requests are always signed with AWS Signature Version 4",
    "storage.s3.multipartcopychunksize": "server-side copies use the part size of chunksize or more",
    "storage.s3.multipartcopymaxconcurrency": "server-side copies share the S3 thread pool",
    "storage.s3.multipartcopythresholdsize": "server-side copies are used for every piece of 5 MiB or more",
    "storage.s3.useragent": "boto3's User-Agent is sent",
    "storage.s3.usedualstack": "not supported; use regionendpoint",
    "storage.s3.accelerate": "not supported; use regionendpoint",
    "storage.s3.usefipsendpoint": "not supported; use regionendpoint",
    "storage.s3.loglevel": "S3 calls are logged at the registry's log.level",
    "storage.s3.redirectendpoint": "presigned URLs use regionendpoint",
    "storage.s3.objectacl": "objects are private (the bucket's policy applies)",
    "auth.token.autoredirect": "set auth.token.realm, or use the built-in token service",
    "auth.token.autoredirectpath": "set auth.token.realm, or use the built-in token service",
    "auth.token.signingalgorithms": "RS256 and ES256 (and the other algorithms of the trusted keys) are accepted",
    "catalog": "catalog pages hold at most 10,000 entries (n beyond that is a 400)",
    "tags": "tag pages hold at most 10,000 entries (n beyond that is a 400)",
    "middleware": "storage middleware (CloudFront, redirect) is not supported; S3 redirects are built in",
    "redis": "no Redis: caches live in each process, and shared state in the storage backend",
    "validation": "manifests are validated as the OCI spec requires; URL and platform policies are not supported",
    "policy": "repository classes are not supported",
    "proxy.exec": "credential helpers are not supported; use username and password",
    "proxy.cachewritetimeout": "cache fills stop when the upstream stalls (its own timeout)",
}

#: loopback and private networks: where proxies and load balancers usually are
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
#: storage drivers Distribution has and this registry does not
UNSUPPORTED_DRIVERS = ("azure", "gcs", "swift", "oss")
DRIVERS = ("filesystem", "s3", "inmemory")
#: keys of `storage` that configure the store whatever its driver (Distribution's, plus ours)
STORAGE_OPTIONS = ("delete", "redirect", "maintenance", "cache", "tag", "gc", "retention")


class Section(BaseModel):
    """A mapping in the config whose keys are all known."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        """`section:` with nothing under it (YAML null) means the section with its defaults."""
        return {} if value is None else value


# -- log -----------------------------------------------------------------------------------------

class AccessLog(Section):
    disabled: Bool = False


class Log(Section):
    level: LogLevel = "info"
    #: text, or json (one object per line); Distribution's logstash is json with @timestamp and @version
    formatter: Literal["text", "json", "logstash"] = "text"
    fields: dict[str, Str] = {}  # added to every log line (service: registry, environment: staging)
    accesslog: AccessLog = AccessLog()


# -- http ----------------------------------------------------------------------------------------

class Tls(Section):
    certificate: Str | None = None  # PEM certificate (chain) file
    key: Str | None = None  # its PEM private key
    clientcas: StrList = []  # CA files: clients must present a certificate one of them issued
    minimumtls: Literal["tls1.2", "tls1.3"] = "tls1.2"

    @model_validator(mode="after")
    def _pair(self) -> "Tls":
        if bool(self.certificate) != bool(self.key):
            raise ValueError("set both certificate and key (or neither)")
        if self.clientcas and not self.certificate:
            raise ValueError("clientcas needs certificate and key: client certificates are checked over TLS")
        return self


class Timeouts(Section):
    """How long a client may take; a connection that overstays is closed (registry/connections.py)."""

    header: PositiveDuration = 10.0  # a request's head (request line and headers), from its first byte
    body: PositiveDuration = 60.0  # a request body that sends no byte, or a client that takes none of a response
    keepalive: PositiveDuration = 75.0  # an idle connection between two requests


class Limits(Section):
    connections: Natural = Field(1000, ge=1)  # open client connections; more wait in the kernel's backlog
    manifestmemory: Size = Field(64 << 20, ge=4 << 20)  # manifest bodies buffered at once, all requests together


class Prometheus(Section):
    enabled: Bool = False  # serve metrics on the debug server (http.debug.addr) at path
    path: Str = "/metrics"
    #: ours: also serve them, unauthenticated, on the main port; default: on unless auth is configured
    mainport: Bool | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.startswith("/v2"):
            raise ValueError(f"expected a path such as /metrics (outside /v2), not {value!r}")
        return value


class Debug(Section):
    addr: Address | None = None  # the debug server: /debug/health, /livez, /readyz, and metrics if enabled
    prometheus: Prometheus = Prometheus()


class RequestId(Section):
    #: clients (a proxy, a load balancer) whose X-Request-Id header is used; others get a generated id
    trustfrom: list[Network] = Field(default_factory=lambda: [ipaddress.ip_network(n) for n in PRIVATE_NETWORKS])


class Http(Section):
    addr: Address = "127.0.0.1:5000"
    net: Literal["tcp"] = "tcp"
    host: Url | None = None  # external base URL: Location headers become absolute
    prefix: Literal["", "/"] = ""  # serving under a path prefix is not supported: use a reverse proxy
    secret: Secret | None = None  # signs state handed to clients; replicas must share it
    draintimeout: Duration = 30.0  # at SIGTERM, how long requests in flight may take to finish
    #: ours: at SIGTERM, keep serving this long with /readyz answering 503 before closing the listener,
    #: so that load balancers take the replica out of rotation first
    shutdowndelay: Duration = 0.0
    debug: Debug = Debug()
    requestid: RequestId = RequestId()
    headers: dict[str, StrList] = {}  # added to every response (e.g. Strict-Transport-Security)
    tls: Tls = Tls()
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()

    @property
    def host_port(self) -> tuple[str, int]:
        return split_address(self.addr)


# -- storage -------------------------------------------------------------------------------------

class Filesystem(Section):
    rootdirectory: Str = "./data"
    fsync: Bool = True  # flush data to disk before it becomes visible (power-cut safe); false: faster, not safe

    @field_validator("rootdirectory")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a directory, such as /var/lib/registry")
        return value


class InMemory(Section):
    pass


class S3(Section):
    """Distribution's `storage.s3` keys, plus timeout, max_attempts and max_threads."""

    bucket: Str
    region: Str | None = None
    regionendpoint: Url | None = None  # MinIO, Ceph RGW, ...: path-style URLs
    forcepathstyle: Bool = False
    accesskey: Str | None = None  # with secretkey; both absent: boto3's credential chain
    secretkey: Secret | None = None
    sessiontoken: Secret | None = None
    rootdirectory: Str = ""
    chunksize: Size = Field(10 << 20, ge=5 << 20)  # multipart part size, at least 5 MiB (S3's minimum)
    secure: Bool = True
    skipverify: Bool = False
    encrypt: Bool = False
    keyid: Str | None = None  # KMS key for encrypt
    storageclass: Literal["STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                          "GLACIER_IR", "NONE"] = "STANDARD"
    timeout: PositiveDuration = 60.0  # one S3 call; a stalled connection is retried
    max_attempts: Natural = Field(8, ge=1)  # tries per S3 call (botocore's standard retries)
    max_threads: Natural = Field(32, ge=1)  # concurrent S3 calls

    @field_validator("rootdirectory")
    @classmethod
    def _relative(cls, value: str) -> str:
        return value.strip("/")

    @model_validator(mode="after")
    def _credentials(self) -> "S3":
        if bool(self.accesskey) != bool(self.secretkey):
            raise ValueError("set both accesskey and secretkey, or neither (boto3's credential chain)")
        return self


class Delete(Section):
    enabled: Bool = True


class Redirect(Section):
    disable: Bool = False


class ReadOnly(Section):
    enabled: Bool = False


class UploadPurging(Section):
    enabled: Bool = True
    age: PositiveDuration = 168 * 3600.0  # uploads started longer ago are abandoned
    interval: PositiveDuration = 24 * 3600.0
    dryrun: Bool = False


class Maintenance(Section):
    uploadpurging: UploadPurging = UploadPurging()
    readonly: ReadOnly = ReadOnly()


class GC(Section):
    enabled: Bool = False  # collect in the background while serving
    interval: PositiveDuration = 3600.0
    grace: Duration = 3600.0  # content younger than this is never collected
    deleteuntagged: Bool = False


class RetentionRule(Section):
    repositories: StrList = Field(min_length=1)  # shell-style patterns on the whole name
    keeplast: Natural | None = None  # the N tags pushed most recently
    keeptags: list[Regex] = []  # tags a regular expression finds (searched: anchor it)
    keepdays: float | None = Field(None, ge=0)  # tags pushed within N days

    @model_validator(mode="after")
    def _keeps_something(self) -> "RetentionRule":
        if self.keeplast is None and not self.keeptags and self.keepdays is None:
            # a rule that keeps nothing would delete every tag of its repositories: say so explicitly
            raise ValueError("needs keeplast, keeptags or keepdays (keeplast: 0 to keep no tag)")
        return self


class Storage(Section):
    filesystem: Filesystem | None = None
    s3: S3 | None = None
    inmemory: InMemory | None = None
    delete: Delete = Delete()
    redirect: Redirect = Redirect()
    maintenance: Maintenance = Maintenance()
    gc: GC = GC()
    retention: list[RetentionRule] = []

    @model_validator(mode="before")
    @classmethod
    def _one_driver(cls, value: Any) -> Any:
        """Distribution also takes `storage: inmemory`; exactly one driver, filesystem when none is named."""
        if isinstance(value, str):
            value = {value: {}}
        if not isinstance(value, dict):
            return value
        for name in UNSUPPORTED_DRIVERS:
            if name in value:
                raise ValueError(f"the {name} storage driver is not supported; use one of {', '.join(DRIVERS)}")
        named = [name for name in DRIVERS if name in value]
        if len(named) > 1:
            raise ValueError(f"configure exactly one storage driver, not {' and '.join(named)}")
        if not named:
            value = {**value, "filesystem": {}}
        else:
            value = {**value, named[0]: value[named[0]] or {}}
        return value

    @property
    def driver(self) -> str:
        return next(name for name in DRIVERS if getattr(self, name) is not None)


# -- auth ----------------------------------------------------------------------------------------

class Htpasswd(Section):
    realm: Str = "registry"
    path: Str  # bcrypt htpasswd file (`registry user add`)


class BuiltinTokenService(Section):
    key: Str | None = None  # ES256 signing key; default: token-key.pem in the storage directory


def _builtin(value: Any) -> Any:
    """`builtin: true` is the service with its default key; false (or absent) is no service."""
    if value is None or isinstance(value, dict):
        return value
    return {} if parse_bool(value) else None


class Token(Section):
    realm: Url | None = None  # where clients get tokens; default with builtin: this server's /auth/token
    service: Str = "registry"
    issuer: Str = "registry-token-service"
    rootcertbundle: Str | None = None  # certificates whose keys sign trusted tokens
    jwks: Str | None = None  # a JWKS file of trusted keys
    #: serve tokens at /auth/token for the htpasswd users (`builtin: true`, or `builtin: {key: FILE}`)
    builtin: Annotated[BuiltinTokenService | None, BeforeValidator(_builtin)] = None

    @model_validator(mode="after")
    def _trust(self) -> "Token":
        if self.builtin is None:
            if not self.rootcertbundle and not self.jwks:
                raise ValueError("set rootcertbundle or jwks (the keys tokens are signed with), or builtin: true")
            if not self.realm:
                raise ValueError("realm is required with an external token service")
        return self


Action = Literal["pull", "push", "delete", "*"]


class AccessRule(Section):
    repositories: StrList = Field(min_length=1)  # shell-style patterns on the whole name
    actions: list[Action] = Field(min_length=1)
    users: StrList = []  # "*": every authenticated user
    groups: StrList = []
    anonymous: Bool = False  # anyone, logged in or not


class Access(Section):
    groups: dict[str, StrList] = {}
    rules: list[AccessRule] = []


class Auth(Section):
    htpasswd: Htpasswd | None = None
    token: Token | None = None
    access: Access | None = None

    @model_validator(mode="before")
    @classmethod
    def _supported(cls, value: Any) -> Any:
        if isinstance(value, dict) and "silly" in value:
            raise ValueError("the silly auth scheme is for Distribution's tests only; use htpasswd or token")
        return value

    @model_validator(mode="after")
    def _complete(self) -> "Auth":
        if self.htpasswd is None and self.token is None:
            raise ValueError("configure htpasswd or token (an empty auth section would leave the registry open)")
        if self.token is not None and self.token.builtin is not None and self.htpasswd is None:
            raise ValueError("token.builtin needs htpasswd.path: the built-in token service logs its users in there")
        return self

    @property
    def mode(self) -> str:
        return "token" if self.token is not None else "htpasswd"


# -- proxy ---------------------------------------------------------------------------------------

class Upstream(Section):
    prefix: Str  # local names <prefix>/<name> mirror <name> upstream
    remoteurl: Url
    username: Str | None = None
    password: Secret | None = None
    ttl: Duration = 168 * 3600.0  # how long a cached tag is served before it is confirmed upstream
    dockerhub: Bool | None = None  # one-component names mean library/<name>; default: for Docker Hub's hosts

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        try:
            check_name(value)
        except RegistryError as exc:
            raise ValueError(f"prefix {value!r} is not a valid repository name prefix: {exc.message}") from None
        return value


class ProxyCache(Section):
    maxage: PositiveDuration | None = None  # evict what was fetched longer ago
    maxsize: Size | None = None  # then evict the oldest while the cache is bigger
    interval: PositiveDuration = 3600.0


class Proxy(Section):
    remoteurl: Url | None = None  # Distribution's pull-through cache: every name mirrors this upstream
    username: Str | None = None
    password: Secret | None = None
    ttl: Duration = 168 * 3600.0
    upstreams: list[Upstream] = []  # ours: several upstreams by name prefix, beside local names
    cache: ProxyCache | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Proxy":
        prefixes = [upstream.prefix for upstream in self.upstreams]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("two upstreams share a prefix")
        if self.cache is not None and not self.remoteurl and not self.upstreams:
            raise ValueError("cache needs remoteurl or upstreams")
        return self


# -- health -------------------------------------------------------------------------------------

class StorageDriverCheck(Section):
    enabled: Bool = False
    interval: PositiveDuration = 10.0
    threshold: Natural = 0  # failures in a row before the check fails; 0: the first one
    timeout: PositiveDuration = 5.0  # ours: a storage probe slower than this fails (also for /readyz)


class FileCheck(Section):
    file: Str  # the check fails while this file exists (to take a replica out of rotation)
    interval: PositiveDuration = 10.0


class HttpCheck(Section):
    uri: Url  # HEAD must answer statuscode
    headers: dict[str, SecretList] = {}
    statuscode: Natural = Field(200, ge=100, le=599)
    timeout: PositiveDuration = 5.0
    interval: PositiveDuration = 10.0
    threshold: Natural = 0


class TcpCheck(Section):
    addr: Address  # a connection must open
    timeout: PositiveDuration = 5.0
    interval: PositiveDuration = 10.0
    threshold: Natural = 0


class Health(Section):
    storagedriver: StorageDriverCheck = StorageDriverCheck()
    file: list[FileCheck] = []
    http: list[HttpCheck] = []
    tcp: list[TcpCheck] = []


# -- notifications ------------------------------------------------------------------------------

EventAction = Literal["push", "pull", "delete", "mount"]


class Ignore(Section):
    mediatypes: StrList = []
    actions: list[EventAction] = []


class Endpoint(Section):
    name: Str = Field(min_length=1, max_length=100)
    disabled: Bool = False
    url: Url
    headers: dict[str, SecretList] = {}
    timeout: PositiveDuration = 1.0
    threshold: Natural = 10  # failures in a row retried at once before backing off
    backoff: PositiveDuration = 1.0  # the first pause after threshold failures; it doubles up to a minute
    ignoredmediatypes: StrList = []
    ignore: Ignore = Ignore()
    secret: Secret | None = None  # ours: sign each body with HMAC-SHA256 (X-Registry-Signature-256)


class Events(Section):
    includereferences: Bool = False  # manifest events list the manifest's references


class Notifications(Section):
    events: Events = Events()
    endpoints: list[Endpoint] = []
    #: ours: where each endpoint's queue is kept on local disk; default: notifications/ in the
    #: filesystem storage directory, else in the working directory. One process per directory.
    spool: Str | None = None
    queuelimit: Natural = Field(100_000, ge=1)  # ours: events kept per endpoint; beyond, the oldest are dropped

    @model_validator(mode="after")
    def _unique(self) -> "Notifications":
        names = [endpoint.name for endpoint in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError("two endpoints share a name (each has its own queue, found by name)")
        return self


# -- tracing -------------------------------------------------------------------------------------

class Tracing(Section):
    """Ours: OpenTelemetry spans over OTLP/HTTP; needs the `tracing` extra (the OpenTelemetry SDK)."""

    enabled: Bool = False
    endpoint: Url = "http://localhost:4318/v1/traces"  # the collector's OTLP/HTTP traces URL
    servicename: Str = Field("registry", min_length=1)  # the service.name spans carry
    samplingratio: float = Field(1.0, ge=0, le=1)  # of the traces begun here; a client's sampled flag wins
    headers: dict[str, Secret] = {}  # sent with each export (an API key, say)
    timeout: PositiveDuration = 10.0  # per export; spans that cannot be sent are dropped


# -- the whole file ------------------------------------------------------------------------------

class UI(Section):
    enabled: Bool = True


class Settings(Section):
    version: Literal["0.1"] = "0.1"
    log: Log = Log()
    http: Http = Http()
    storage: Storage = Storage()
    auth: Auth | None = None
    proxy: Proxy | None = None
    ui: UI = UI()
    health: Health = Health()
    notifications: Notifications = Notifications()
    tracing: Tracing = Tracing()
    #: Distribution keys set in the config that this registry ignores, with why (set by the loader)
    _ignored: list[str] = PrivateAttr(default_factory=list)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        return "0.1" if value in (0.1, "0.1", None) else str(value)

    @property
    def ignored(self) -> list[str]:
        return self._ignored
