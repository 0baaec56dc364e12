"""The central server object: builds every component from the config and runs them."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import ssl
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from rportd import __version__
from rportd.api.access_log import CombinedAccessLogger, open_access_log
from rportd.auditlog.store import AuditLog
from rportd.auditlog.syncback import AuditSyncSource
from rportd.auth.accounts import AccountService
from rportd.auth.delivery import PushoverSender, SenderUnavailable, build_sender
from rportd.auth.jwt import TokenIssuer
from rportd.auth.sessions import ApiSessionStore
from rportd.auth.throttle import IpBan, LoginWait
from rportd.auth.tokens import ApiTokenStore
from rportd.auth.twofactor import TwoFactorService
from rportd.auth.users import (
    DbUserStore,
    FileUserStore,
    StaticUserStore,
    User,
    UserGroupsDataset,
    UserStore,
)
from rportd.clients.access import ClientAccess
from rportd.clients.acl import ClientAclStore
from rportd.clients.credentials import (
    ClientCredentials,
    FileCredentials,
    StaticCredentials,
    TableCredentials,
)
from rportd.clients.groups import ClientGroupStore
from rportd.clients.registry import ClientRegistry, RegistrySettings
from rportd.clients.replicated_tunnels import ClientTunnels
from rportd.clients.service import ClientService, ClientSettings
from rportd.clients.syncback import ClientSyncSource
from rportd.config import Config
from rportd.config.unsupported import refusals
from rportd.ha.changelog import ChangeLog
from rportd.ha.controller import HAController
from rportd.ha.mirror import FileMirror
from rportd.ha.state import ACTIVE, SECONDARY
from rportd.ha.syncback import Outbox, SyncBack, SyncSource
from rportd.jobs.audit import ResultAudit
from rportd.jobs.repository import JobRepository
from rportd.jobs.service import JobService, JobSettings
from rportd.jobs.syncback import JobSyncSource, MultiJobSyncSource
from rportd.library.store import Library
from rportd.metrics.exporter import MetricsExporter
from rportd.metrics.instruments import Metrics
from rportd.monitoring.store import MeasurementStore
from rportd.schedules.runner import ScheduleRunner
from rportd.schedules.store import ScheduleStore
from rportd.store.changes import ReplicatedDataset, WriteGuard
from rportd.store.clients import ClientRepository
from rportd.store.database import Database, SqlDatabase
from rportd.store.external import DatabaseUnavailable, error_reason, external_database
from rportd.tunnels.ports import PortPool
from rportd.tunnels.service import TunnelService, TunnelSettings
from rportd.tunnels.stored import StoredTunnelStore
from rportd.uploads.service import UploadService
from rportd.uploads.sftp import sftp_channel_handler
from rportd.vault import store as vault_store
from rportd.vault.service import Vault
from rportd.wire.hostkey import HostKey
from rportd.wire.listener import ClientListener
from rportd.wire.ssh import server_options
from rportd.wire.websocket import WebSocketTransport

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "rportd-fingerprint.txt"


class TwoFactorLogin(Protocol):
    """Second login step (delivered code or TOTP), when configured."""

    async def begin_login(self, request: web.Request, user: User, lifetime: int) -> web.Response:
        """Answer ``/login`` for a user whose password was right."""
        ...


class StartupError(Exception):
    """The server cannot start; the message says why and what to change."""


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a bind address."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class RportServer:
    """One rportd node: client listener, API, storage and background duties."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = __version__
        self.data_dir = Path(config.server.data_dir)
        self.host_key = HostKey(config.server.key_seed)
        self.fingerprint = self.host_key.fingerprint
        self.databases: dict[str, Database] = {}
        self.external_db: SqlDatabase | None = None
        self._unchecked_tables = False  # [database] did not answer at start
        self.credentials: ClientCredentials
        self.users: UserStore | None = None
        self.sessions: ApiSessionStore | None = None
        self.api_tokens: ApiTokenStore | None = None
        self.client_groups: ClientGroupStore
        self.auditlog: AuditLog | None = None
        self.two_fa: TwoFactorService | None = None
        self.tokens_issuer = TokenIssuer(config.api.jwt_secret or secrets.token_urlsafe(32))
        self.api_login_wait = LoginWait(config.api.user_login_wait)
        self.api_ip_ban = IpBan(config.api.max_failed_login, config.api.ban_time)
        self.tunnels = TunnelService(
            PortPool(config.server.allowed_ports()), TunnelSettings.from_config(config.server)
        )
        self.stored_tunnels: StoredTunnelStore
        self.client_access = ClientAccess()
        self.measurements: MeasurementStore | None = None
        self.uploads: UploadService | None = None
        self.replicated: dict[str, ReplicatedDataset] = {}
        self.db_replicated: dict[str, ReplicatedDataset] = {}
        self.ha: HAController | None = None
        self.sync_sources: dict[str, SyncSource] = {}
        self.syncback: SyncBack | None = None
        self.accounts: AccountService
        self.two_factor: TwoFactorLogin | None = None
        self.clients: ClientService
        self.jobs: JobService
        self.library: Library
        self.vault: Vault
        self.schedules: ScheduleStore
        self.schedule_runner: ScheduleRunner
        self.listener: ClientListener
        self.client_address: tuple[str, int] | None = None
        self.api_address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None
        self.metrics = Metrics()
        self.exporter: MetricsExporter | None = None
        self._stack = AsyncExitStack()
        self._stopped = asyncio.Event()

    # --- building ----------------------------------------------------------------

    async def database(self, filename: str, schema: str, *, wal: bool | None = None) -> Database:
        """Open (once) the SQLite file ``filename`` in ``data_dir`` (``wal``: config default)."""
        if filename not in self.databases:
            if wal is None:
                wal = self.config.server.sqlite_wal
            db = Database(self.data_dir / filename, schema, wal=wal)
            db.write_observer = self.metrics.db_write_seconds.labels(filename).observe
            await db.open()
            self.databases[filename] = db
            self._stack.push_async_callback(db.close)
        return self.databases[filename]

    async def _open_external_db(self) -> SqlDatabase | None:
        """The ``[database]`` DB; a server that does not answer yet is not fatal."""
        cfg = self.config.database
        if not cfg.db_type:
            return None
        try:
            db = external_database(cfg, wal=self.config.server.sqlite_wal)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        self._stack.push_async_callback(db.close)
        try:
            await db.open()
        except DatabaseUnavailable as exc:
            log.error("%s; requests that need it fail (503) until it answers", exc)
            self._unchecked_tables = True
        except Exception as exc:
            raise StartupError(f"cannot open [database] {db.label}: {exc}") from exc
        else:
            log.info("[database]: connected to %s", db.label)
        return db

    async def _check_tables(
        self, check: Coroutine[Any, Any, None], what: str, hint: str = ""
    ) -> None:
        """Refuse to start when tables or columns are missing (not when the server is down)."""
        if self._unchecked_tables:
            check.close()  # the database did not answer at start: do not wait for it again
            return
        try:
            await check
        except DatabaseUnavailable as exc:
            log.error("cannot check %s yet: %s", what, exc)
        except Exception as exc:
            raise StartupError(f"{what}: {error_reason(exc)}{hint}") from exc

    async def _client_credentials(self) -> ClientCredentials:
        srv = self.config.server
        if srv.auth:
            return StaticCredentials(srv.auth)
        if srv.auth_file:
            creds = FileCredentials(srv.auth_file)
            try:
                await creds.load()
            except ValueError as exc:
                raise StartupError(str(exc)) from exc
            return creds
        assert self.external_db is not None
        table = TableCredentials(self.external_db, srv.auth_table)
        await self._check_tables(
            table.check(),
            f"[server] auth_table {srv.auth_table!r} must have columns id and password",
        )
        return table

    async def _user_store(self) -> UserStore | None:
        api = self.config.api
        if not api.enabled:
            return None
        store: UserStore
        if api.auth:
            store = StaticUserStore(api.auth)
        elif api.auth_file:
            store = FileUserStore(api.auth_file)
        else:
            assert self.external_db is not None
            store = DbUserStore(
                self.external_db,
                api.auth_user_table,
                api.auth_group_table,
                api.auth_group_details_table,
                with_two_fa=bool(api.two_fa_token_delivery),
                with_totp=api.totp_enabled,
            )
        if isinstance(store, DbUserStore):
            hint = ""
            if api.two_fa_token_delivery or api.totp_enabled:
                hint = (
                    " (with 2FA the users table needs column two_fa_send_to, with TOTP totp_secret)"
                )
            await self._check_tables(store.load(), "cannot load API users", hint)
            return store
        try:
            await store.load()
        except Exception as exc:
            raise StartupError(f"cannot load API users: {exc}") from exc
        return store

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, load state and start listening."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        cfg = self.config
        unsupported = refusals(cfg)
        if unsupported:
            raise StartupError(
                "configuration that rportd cannot honour:\n  " + "\n  ".join(unsupported)
            )
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(
            (self.data_dir / FINGERPRINT_FILE).write_text, self.fingerprint + "\n"
        )
        if not cfg.server.key_seed:
            log.warning(
                "no [server] key_seed: the host key is random and its fingerprint changes at "
                "every start; set key_seed so clients can pin it"
            )
        if not cfg.api.jwt_secret and cfg.api.enabled:
            log.warning("no [api] jwt_secret: API logins end when the server restarts")
        elif cfg.api.enabled and self.tokens_issuer.weak:
            log.warning("[api] jwt_secret is shorter than 32 bytes; a longer one is safer")
        self.external_db = await self._open_external_db()
        self.credentials = await self._client_credentials()
        self.users = await self._user_store()

        clients_db = await self.database("clients.db", "clients")
        repo = ClientRepository(clients_db)
        registry = ClientRegistry(
            repo,
            RegistrySettings(
                auth_multiuse_creds=cfg.server.auth_multiuse_creds,
                equate_clientauthid_clientid=cfg.server.equate_clientauthid_clientid,
                purge_disconnected_clients=cfg.server.purge_disconnected_clients,
                keep_disconnected_clients=cfg.server.keep_disconnected_clients,
            ),
            self.tunnels,
        )
        await registry.load()
        self.client_groups = ClientGroupStore(
            await self.database("client_groups.db", "client_groups")
        )
        await self.client_groups.load()
        self.client_access = ClientAccess(self.client_groups.all)
        self.client_acls = ClientAclStore(clients_db, registry)
        await self.client_acls.load()
        self.tunnels.client_changed = registry.save
        self.stored_tunnels = StoredTunnelStore(clients_db)
        repo.start()
        self._stack.push_async_callback(repo.stop)
        self.clients = ClientService(
            ClientSettings(
                server_version=self.version,
                monitoring_enabled=cfg.monitoring.enabled,
                max_request_bytes_client=cfg.server.max_request_bytes_client,
                check_clients_connection_interval=cfg.server.check_clients_connection_interval,
                check_clients_connection_timeout=cfg.server.check_clients_connection_timeout,
                purge_disconnected_clients_interval=cfg.server.purge_disconnected_clients_interval,
            ),
            self.credentials,
            registry,
            LoginWait(cfg.server.client_login_wait),
            IpBan(cfg.server.max_failed_login, cfg.server.ban_time),
            self.metrics,
        )
        await self.tunnels.start()
        self._stack.push_async_callback(self.tunnels.close)
        self.clients.deleted_listeners += [
            self.stored_tunnels.delete_for_client,
            self.client_acls.forget,
        ]
        self.jobs = JobService(
            JobRepository(await self.database("jobs.db", "jobs")),
            self.clients,
            JobSettings(
                default_timeout_sec=cfg.server.run_remote_cmd_timeout_sec,
                max_results=cfg.server.jobs_max_results,
                max_request_bytes_client=cfg.server.max_request_bytes_client,
            ),
            self.metrics,
        )
        await self.jobs.start()
        self._stack.push_async_callback(self.jobs.stop)
        self.library = Library(await self.database("library.db", "library"))
        self.vault = Vault(
            vault_store.VaultStore(
                self.data_dir / vault_store.FILENAME,
                # Upstream keeps the vault file out of WAL mode.
                lambda: self.database(vault_store.FILENAME, vault_store.SCHEMA, wal=False),
            )
        )
        await self.vault.store.open_if_exists()
        self.schedules = ScheduleStore(await self.database("jobs.db", "jobs"))
        self.schedule_runner = ScheduleRunner(
            self.schedules, self.jobs, self.clients.registry, self.client_groups, self.is_leader
        )
        if cfg.monitoring.enabled:
            self.measurements = MeasurementStore(
                await self.database("monitoring.db", "monitoring"),
                cfg.monitoring.data_storage_duration,
            )
            self.measurements.start()
            self._stack.push_async_callback(self.measurements.stop)
            measurements = self.measurements
            self.clients.request_handlers["save_measurement"] = lambda conn, payload: (
                measurements.add(conn.client.id, payload) if conn.client else None
            )

        if cfg.api.enabled:
            self.sessions = ApiSessionStore(await self.database("api_sessions.db", "api_sessions"))
            await self.sessions.load()
            self.sessions.start()
            self._stack.push_async_callback(self.sessions.stop)
            assert self.users is not None
            await self._start_access()
            if self.auditlog is not None:
                self.jobs.result_listeners.append(ResultAudit(self.auditlog, self.clients.registry))
            self.uploads = UploadService(self.data_dir / "filepush", auditlog=self.auditlog)
            await self.uploads.open()
            self._stack.push_async_callback(self.uploads.stop)
            self.clients.channel_handlers["session"] = sftp_channel_handler(self.uploads)

        self._collect_replicated()
        if cfg.ha.enabled:
            await self._start_ha()
        await self.schedule_runner.start()
        self._stack.push_async_callback(self.schedule_runner.stop)

        self.listener = ClientListener(
            server_options(self.host_key.ssh_key, login_timeout=60.0),
            self.clients.connection_factory,
            is_banned=self.clients.ip_ban.is_banned,
            max_concurrent_handshakes=cfg.server.max_concurrent_ssh_handshakes,
            proxy_url=cfg.server.proxy,
            admission=self.ha.admission_refusal if self.ha else None,
            metrics=self.metrics,
        )
        self.client_address = await self._serve(self.listener.app, cfg.server.address, None)
        self.clients.start(purge=cfg.server.purge_disconnected_clients)
        self._stack.push_async_callback(self.clients.stop)
        self._stack.callback(self.clients.close_all)

        if cfg.metrics.enabled:
            self.exporter = MetricsExporter(self, self.metrics)
            self.exporter.start()
            self._stack.push_async_callback(self.exporter.stop)
            if cfg.metrics.address:
                self.metrics_address = await self._serve(
                    self.exporter.app(), cfg.metrics.address, None
                )
        if cfg.api.enabled:
            from rportd.api.app import create_api_app
            from rportd.api.webui import DocRoot, DocRootError

            ssl_ctx = None
            if cfg.api.cert_file:
                ssl_ctx = await asyncio.to_thread(
                    _server_ssl_context, cfg.api.cert_file, cfg.api.key_file, cfg.api.tls_min
                )
            access_log = None
            if cfg.api.access_log_file:
                access_log, writer = await asyncio.to_thread(
                    open_access_log, cfg.api.access_log_file
                )
                self._stack.callback(writer.stop)
            doc_root = None
            if cfg.api.doc_root:
                try:
                    doc_root = await asyncio.to_thread(DocRoot, cfg.api.doc_root)
                except DocRootError as exc:
                    raise StartupError(str(exc)) from exc
            self.api_address = await self._serve(
                create_api_app(self, doc_root), cfg.api.address, ssl_ctx, access_log
            )
            # Upstream's wording: its test helpers (and operators' scripts) wait for it.
            log.info("API Listening on %s...", _host_port(self.api_address))
        log.info(
            "rportd %s listening for clients on %s (fingerprint %s)%s",
            self.version,
            "{}:{}".format(*self.client_address),
            self.fingerprint,
            ", API on {}:{}".format(*self.api_address) if self.api_address else "",
        )

    def _collect_replicated(self) -> None:
        """Every store of operator-created data, by data set name.

        Tables in a database server every node shares (or reads a replica of) are
        replicated by that database: they go to :attr:`db_replicated` instead.
        """
        self.replicated[self.stored_tunnels.dataset] = self.stored_tunnels
        in_db = self.replicated
        if self.external_db is not None and self.external_db.shared:
            in_db = self.db_replicated
        if self.credentials.writable:
            target = in_db if isinstance(self.credentials, TableCredentials) else self.replicated
            target[self.credentials.dataset] = self.credentials
        if self.sessions is not None:
            self.replicated[self.sessions.dataset] = self.sessions
        if self.users is not None and self.users.writable:
            target = in_db if isinstance(self.users, DbUserStore) else self.replicated
            target[self.users.dataset] = self.users
            if isinstance(self.users, DbUserStore) and self.users.group_permissions_enabled:
                groups = UserGroupsDataset(self.users)
                in_db[groups.dataset] = groups
        if self.api_tokens is not None:
            self.replicated[self.api_tokens.dataset] = self.api_tokens
        self.replicated[self.client_groups.dataset] = self.client_groups
        self.replicated[self.client_acls.dataset] = self.client_acls
        for library in (self.library.scripts, self.library.commands):
            self.replicated[library.dataset] = library
        self.replicated[self.vault.store.dataset] = self.vault.store
        vault_status = vault_store.VaultStatusDataset(self.vault.store)
        self.replicated[vault_status.dataset] = vault_status
        self.replicated[self.schedules.dataset] = self.schedules

    def is_leader(self) -> bool:
        """Whether this node does what only one node may do (e.g. run schedules).

        The node serving the clients: a standalone server, the active primary, or a
        secondary that took over while its primary is unreachable (its jobs flow back).
        """
        return self.ha is None or self.ha.state == ACTIVE

    def _client_websockets(self) -> Iterator[tuple[str, WebSocketTransport]]:
        """Connected clients and the WebSockets they run over (HA pings them)."""
        for client in self.clients.registry.connected():
            ws = client.connection.websocket if client.connection is not None else None
            if ws is not None:
                yield client.id, ws

    async def _start_ha(self) -> None:
        cfg = self.config
        ha_db = await self.database("ha.db", "ha")
        changelog = ChangeLog(ha_db, epoch=lambda: self.ha.epoch if self.ha else 0)
        sources: list[SqlDatabase] = list(self.databases.values())
        if self.external_db is not None and not self.external_db.shared:
            sources.append(self.external_db)
        await changelog.open(sources)
        if cfg.ha.synchronous:
            changelog.synchronous_timeout = cfg.ha.synchronous_timeout
            if self.sessions is not None:
                # A login must work while no secondary does; a lost session means a new login.
                changelog.not_awaited.add(self.sessions.dataset)
        client_tunnels = ClientTunnels(ha_db, self.clients.registry)
        await client_tunnels.load()
        self.replicated[client_tunnels.dataset] = client_tunnels
        self.clients.deleted_listeners.append(client_tunnels.forget)
        for dataset in self.replicated.values():
            dataset.changes = changelog
        for dataset in self.db_replicated.values():
            dataset.changes = WriteGuard(changelog)
        self.ha = HAController(
            cfg.ha,
            self.data_dir,
            changelog,
            self.replicated,
            connected_clients=lambda: self.clients.registry.connected_count,
            disconnect_clients=self.clients.close_all,
            client_connections=self._client_websockets,
            drain_grace=cfg.ha.drain_grace,
            lobby_hold=cfg.ha.knock_hold,
        )
        outbox = Outbox(ha_db, enabled=lambda: self.ha is not None and self.ha.role == SECONDARY)
        await outbox.open()
        self._stack.push_async_callback(outbox.close)
        self.sync_sources[ClientSyncSource.kind] = ClientSyncSource(self.clients.registry)
        self.clients.registry.save_listeners.append(lambda c: outbox.note("clients", c.id))
        if self.auditlog is not None:
            self.sync_sources[AuditSyncSource.kind] = AuditSyncSource(self.auditlog)
            self.auditlog.listeners.append(lambda e: outbox.note(AuditSyncSource.kind, e.key))
        for source in (MultiJobSyncSource(self.jobs.repo), JobSyncSource(self.jobs.repo)):
            self.sync_sources[source.kind] = source
        self.jobs.repo.write_listeners.append(outbox.note)
        self.syncback = SyncBack(outbox, self.sync_sources, self.ha.peers)
        self.ha.sync_back = self.syncback.push
        self.clients.admission = self.ha.admit_client
        mirror = FileMirror(changelog, self.replicated)
        await mirror.seed()
        await self.ha.start()
        self._stack.push_async_callback(self.ha.stop)
        client_tunnels.start()
        self._stack.push_async_callback(client_tunnels.stop)
        await mirror.reconcile()
        mirror.start()
        self._stack.push_async_callback(mirror.stop)

    async def _start_access(self) -> None:
        """API tokens, account policy, 2FA and the audit log."""
        cfg = self.config
        assert self.users is not None
        self.api_tokens = ApiTokenStore(await self.database("api_token.db", "api_token"))
        await self.api_tokens.load()
        try:
            sender = build_sender(cfg.api, cfg.smtp, cfg.pushover)
        except SenderUnavailable as exc:
            raise StartupError(str(exc)) from exc
        if isinstance(sender, PushoverSender):
            # As upstream: the token and [pushover] user_key are checked with Pushover.
            try:
                async with asyncio.timeout(cfg.api.two_fa_send_timeout):
                    await sender.validate_receiver(cfg.pushover.user_key)
            except (ValueError, TimeoutError) as exc:
                raise StartupError(
                    "API: invalid pushover.api_token and pushover.user_key: "
                    f"{exc or 'no answer from Pushover'}"
                ) from exc
        self.accounts = AccountService(
            self.users,
            self.sessions,
            password_min_length=cfg.api.password_min_length,
            zxcvbn_min_score=cfg.api.password_zxcvbn_minscore,
            two_fa_on=sender is not None,
            receiver_check=sender.validate_receiver if sender is not None else None,
        )
        self.accounts.tokens = self.api_tokens
        if sender is not None or cfg.api.totp_enabled:
            from rportd.api.twofactor import ApiTwoFactorLogin

            self.two_fa = TwoFactorService(
                sender=sender,
                totp=cfg.api.totp_enabled,
                code_ttl=cfg.api.two_fa_token_ttl_seconds,
                send_timeout=cfg.api.two_fa_send_timeout,
                totp_session_ttl=cfg.api.totp_login_session_ttl,
            )
            self.two_factor = ApiTwoFactorLogin(self, self.two_fa)
        self.auditlog = AuditLog(
            self.data_dir,
            enabled=cfg.api.enable_audit_log,
            rotation=cfg.api.audit_log_rotation,
            obfuscate=cfg.api.use_ip_obfuscation,
            wal=cfg.server.sqlite_wal,
        )
        self._stack.push_async_callback(self.auditlog.close)
        await self.auditlog.open()
        self.auditlog.start()

    async def _serve(
        self,
        app: web.Application,
        address: str,
        ssl_ctx: ssl.SSLContext | None,
        access_log: logging.Logger | None = None,
    ) -> tuple[str, int]:
        host, port = split_host_port(address)
        runner = web.AppRunner(
            app,
            access_log=access_log,
            access_log_class=CombinedAccessLogger,
            handle_signals=False,
            shutdown_timeout=5.0,
        )
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        site = web.TCPSite(
            runner, host, port, ssl_context=ssl_ctx, reuse_address=True, backlog=4096
        )
        try:
            await site.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {address}: {exc.strerror or exc}") from exc
        server = site._server
        assert server is not None
        sockets: Any = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname() if sockets else (host, port)
        return str(bound[0]), int(bound[1])

    def not_ready_reasons(self) -> list[str]:
        """Why this node does not serve clients now (empty: it does); no I/O but a stat."""
        reasons = []
        refusal = self.ha.serve_refusal() if self.ha is not None else None
        if refusal:
            reasons.append(refusal)
        databases: list[SqlDatabase] = list(self.databases.values())
        if self.external_db is not None:
            databases.append(self.external_db)
        for db in databases:
            if db.write_error:
                reasons.append(f"{db.label} is not writable: {db.write_error}")
        if not os.access(self.data_dir, os.W_OK):
            reasons.append(f"data_dir {self.data_dir} is not writable")
        return reasons

    async def reload_users(self) -> None:
        """Re-read the API user file (SIGUSR1)."""
        if isinstance(self.users, FileUserStore):
            try:
                await self.users.load()
            except ValueError as exc:
                log.error("keeping the previous API users: %s", exc)
            else:
                log.info("reloaded API users from %s", self.users.path)

    async def stop(self) -> None:
        """Close listeners, connections and storage."""
        if self.ha is not None:
            await self.ha.close_streams()
        await self._stack.aclose()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    @property
    def connect_urls(self) -> list[str]:
        return list(self.config.server.url)

    @property
    def two_fa_delivery_method(self) -> str:
        api = self.config.api
        if api.totp_enabled:
            return "totp_authenticator_app"
        delivery = api.two_fa_token_delivery
        if not delivery:
            return ""
        if delivery == "smtp":
            return "email"
        if delivery == "pushover":
            return "pushover"
        if delivery.startswith(("http://", "https://")):
            return "url"
        return "script"


def _server_ssl_context(cert: str, key: str, tls_min: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3 if tls_min == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def _host_port(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
