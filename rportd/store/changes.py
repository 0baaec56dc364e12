"""The one write path of replicated data.

Every store holding data an operator creates (client credentials, users and
groups, API tokens, client groups, library, stored tunnels, ...) is a
:class:`ReplicatedDataset`: a set of JSON documents by key. Each write calls
:meth:`ChangeSink.record` with the document as it now is (``None`` once
deleted), inside the same SQLite transaction as the data when there is one.
High availability installs a sink that keeps a change log and ships it to
secondaries; on a standalone server the sink does nothing.

A secondary applies replicated changes through :meth:`ReplicatedDataset.apply`,
which writes the data without recording it again.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from rportd.store.database import Transaction

Document = dict[str, Any]


class ChangeSink(Protocol):
    """Receives every change of replicated data."""

    @property
    def writable(self) -> bool:
        """False on a secondary: replicated data only changes by replication."""

    def ensure_writable(self, dataset: str) -> None:
        """Raise if ``dataset`` may not change on this node (before touching a file)."""

    async def record(
        self, tx: Transaction | None, dataset: str, key: str, doc: Document | None
    ) -> None:
        """Note that ``dataset[key]`` is now ``doc`` (``None``: deleted)."""


class NullSink:
    """The sink of a standalone server: changes go nowhere."""

    writable = True

    def ensure_writable(self, dataset: str) -> None:
        return None

    async def record(
        self, tx: Transaction | None, dataset: str, key: str, doc: Document | None
    ) -> None:
        return None


NULL_SINK = NullSink()


class WriteGuard:
    """The sink of data a shared database replicates itself: writes checked, nothing logged.

    On a secondary, writes are refused as they are for data the change log carries.
    """

    def __init__(self, sink: ChangeSink) -> None:
        self.sink = sink

    @property
    def writable(self) -> bool:
        return self.sink.writable

    def ensure_writable(self, dataset: str) -> None:
        self.sink.ensure_writable(dataset)

    async def record(
        self, tx: Transaction | None, dataset: str, key: str, doc: Document | None
    ) -> None:
        self.sink.ensure_writable(dataset)


class ReplicatedDataset(Protocol):
    """A store whose content secondaries copy from the primary."""

    changes: ChangeSink

    @property
    def dataset(self) -> str:
        """Stable name of the data set (e.g. ``client_auth``)."""

    async def snapshot(self) -> dict[str, Document]:
        """Every document by key, consistent at one point in time.

        Runs while writers are held off: it must not write (or record) anything.
        """

    async def apply(self, key: str, doc: Document | None) -> None:
        """Write a replicated change (``None`` deletes) without recording it."""

    async def restore(self, docs: dict[str, Document]) -> None:
        """Replace the whole content with a snapshot (without recording it)."""


class _HasSink(Protocol):
    changes: ChangeSink


StoreT = TypeVar("StoreT", bound=_HasSink)


class SecondDataset(Generic[StoreT]):
    """A second data set kept in a store that already has one: it shares that store's sink."""

    def __init__(self, store: StoreT) -> None:
        self.store = store

    @property
    def changes(self) -> ChangeSink:
        return self.store.changes

    @changes.setter
    def changes(self, sink: ChangeSink) -> None:
        self.store.changes = sink
