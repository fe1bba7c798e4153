"""Composition root of the config service: the only place that wires things."""

from __future__ import annotations

from hyperinfer.client.credentials import CredentialsCipher
from hyperinfer.config import api
from hyperinfer.config.adapters.postgres_store import PostgresGovernanceStore
from hyperinfer.config.handlers import Deps
from hyperinfer.config.publisher import Announce, RepairLoop, SnapshotPublisher
from hyperinfer.config.resources import ConfigVersion
from hyperinfer.config.settings import ConfigSettings
from hyperinfer.contracts import names
from hyperinfer.contracts.config import v1 as config_v1
from hyperinfer.runtime import Health, Infra, Service, build_http_app
from hyperinfer.runtime.bus import Bus
from hyperinfer.runtime.errors import RuntimeStartupError
from hyperinfer.runtime.health import expose_version
from hyperinfer.runtime.logs import get_logger
from hyperinfer.runtime.migrate import MigrationError, apply_migrations
from prometheus_client import CollectorRegistry

log = get_logger(__name__)


class _Late:
    """A component built at start-up (it needs live connections), named before."""

    def __init__(self) -> None:
        self.publisher: SnapshotPublisher | None = None
        self.repair: RepairLoop | None = None

    def require(self) -> SnapshotPublisher:
        if self.publisher is None:
            raise RuntimeError("the config service has not started")
        return self.publisher


def create_app(settings: ConfigSettings) -> Service:
    registry = CollectorRegistry()
    health = Health("config")
    infra = Infra.for_service("config", settings, nats=True, redis=True, postgres=True)
    infra.register(health)
    app = build_http_app(
        health,
        registry,
        description="Governance data, admin API and the versioned config snapshot.",
    )
    late = _Late()
    store = PostgresGovernanceStore(lambda: infra.require_postgres().pool)
    deps = Deps(
        store=store,
        publish=lambda version, kinds: late.require().publish(version, kinds),
        cipher=CredentialsCipher(settings.credentials_key.get_secret_value()),
        key_hash_salt=settings.key_hash_salt,
        admin_key=settings.admin_key.get_secret_value(),
        internal_key=settings.internal_key.get_secret_value(),
        publish_timeout_s=settings.publish_timeout_s,
        page_size=settings.page_size,
        max_page_size=settings.max_page_size,
        on_publish_failed=lambda: late.repair.wake() if late.repair else None,
    )

    async def version() -> ConfigVersion:
        publisher = late.require()
        return ConfigVersion(
            version=await store.current_version(),
            published_version=publisher.published_version,
            redis_version=await publisher.redis_version(),
        )

    api.install(app, deps, version, settings.max_body_bytes)

    async def startup() -> None:
        await infra.connect(settings.startup_timeout_s)
        await _migrate(infra, settings)
        bus = Bus(infra.require_nats(), source="config")
        late.publisher = SnapshotPublisher(
            store, infra.require_redis().client, _announcer(bus), settings.key_hash_salt
        )
        expose_version(health, registry, "config", late.publisher)
        try:
            await late.publisher.repair()
        except Exception as exc:  # Redis may come later; the repair loop keeps trying
            log.warning("initial config publish failed", extra={"error": repr(exc)[:300]})
        late.repair = RepairLoop(late.publisher, settings.republish_interval_s)
        late.repair.start()

    async def shutdown() -> None:
        if late.repair is not None:
            await late.repair.stop()
        await infra.close()

    return Service("config", app, settings, startup, shutdown)


def _announcer(bus: Bus) -> Announce:
    async def announce(event: config_v1.ConfigChanged) -> None:
        await bus.publish(names.CONFIG_CHANGED, config_v1.EVENT_CHANGED, event)

    return announce


async def _migrate(infra: Infra, settings: ConfigSettings) -> None:
    async with infra.require_postgres().pool.acquire() as conn:
        try:
            applied = await apply_migrations(conn, settings.migrations_dir)
        except MigrationError as exc:
            raise RuntimeStartupError(f"migrations failed: {exc}") from None
    log.info("migrations applied", extra={"applied": applied})
