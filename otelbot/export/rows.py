"""The row format between the bot and the span export helper.

    from otelbot.export.rows import SpanBatch, read_batch
    batch = SpanBatch()
    for span in ended_spans:           # SDK ReadableSpans
        batch.add(span)
    decoded = read_batch(batch.payload())
    for row in decoded.rows:
        print(row.name, row.end - row.start, decoded.resources[row.resource])

A batch is written with ``marshal`` (C, no per-object Python work, and nothing the
garbage collector tracks while it fills): a tuple ``(FORMAT_VERSION, resources, scopes,
chunks)``, where ``chunks`` are marshalled tuples of up to ``CHUNK`` rows and each
resource and instrumentation scope appears once per batch, referred to by index.

A row is a plain tuple, since ``marshal`` takes no tuple subclass; ``SpanRow`` names its
fields, in order, and the helper reads rows through it. The two builders below are the
only places that write rows: keep them in ``SpanRow``'s order.
"""

from __future__ import annotations

import marshal
from typing import Any, NamedTuple, cast

FORMAT_VERSION = 5
#: Rows marshalled together (see ``SpanBatch._append``).
CHUNK = 16

#: A span context as a row holds it: trace id, span id, is remote, trace flags.
ParentRow = tuple[int, int, bool, int]
#: An event: name, timestamp (ns), attributes, attributes dropped.
EventRow = tuple[str, int, "dict[str, Any] | None", int]
#: A link: trace id, span id, is remote, trace flags, attributes, attributes dropped.
LinkRow = tuple[int, int, bool, int, "dict[str, Any] | None", int]


class SpanRow(NamedTuple):
    """One ended span, as the helper reads it."""

    name: str
    trace_id: int
    span_id: int
    trace_flags: int
    trace_state: tuple[tuple[str, str], ...]
    parent: ParentRow | None
    kind: int  # SpanKind value
    start: int  # ns
    end: int  # ns
    attributes: dict[str, Any] | None
    dropped_attributes: int
    events: tuple[EventRow, ...]
    dropped_events: int
    links: tuple[LinkRow, ...]
    dropped_links: int
    status_code: int  # StatusCode value
    status_description: str | None
    resource: int  # index into the batch's resources
    scope: int  # index into the batch's scopes


class SpanBatch:
    """Spans flattened into plain tuples, dicts and strings (what ``marshal`` takes), with
    each resource and instrumentation scope written once per batch."""

    __slots__ = (
        "chunks",
        "count",
        "pending",
        "resource_table",
        "resources",
        "scope_table",
        "scopes",
    )

    def __init__(self) -> None:
        self.resources: dict[int, int] = {}
        self.scopes: dict[int, int] = {}
        self.resource_table: list[Any] = []
        self.scope_table: list[Any] = []
        self.pending: list[Any] = []  # rows not marshalled yet (at most CHUNK - 1)
        self.chunks: list[bytes] = []  # marshalled tuples of rows
        self.count = 0

    def _resource_index(self, resource: Any) -> int:
        r = self.resources.get(id(resource))
        if r is None:
            r = self.resources[id(resource)] = len(self.resource_table)
            self.resource_table.append((dict(resource.attributes), resource.schema_url or ""))
        return r

    def _scope_index(self, scope: Any) -> int:
        s = self.scopes.get(id(scope))
        if s is None:
            s = self.scopes[id(scope)] = len(self.scope_table)
            self.scope_table.append(
                None
                if scope is None
                else (scope.name, scope.version, scope.schema_url, dict(scope.attributes or {}))
            )
        return s

    def _append(self, row: tuple[Any, ...]) -> None:
        # Rows are marshalled a few at a time: bytes are not tracked by the garbage
        # collector, so a batch being filled does not make the bot's GC run more often,
        # and one marshal call per chunk writes the repeated names once.
        pending = self.pending
        pending.append(row)
        self.count += 1
        if len(pending) >= CHUNK:
            self._seal()

    def _seal(self) -> None:
        if not self.pending:
            return
        chunk = tuple(self.pending)
        self.pending = []
        try:
            self.chunks.append(marshal.dumps(chunk))
        except ValueError:  # e.g. a str-enum attribute value: rare, slow path
            self.chunks.append(marshal.dumps(_plain(chunk)))

    def add(self, span: Any) -> None:
        """Add an SDK ``ReadableSpan`` (a row in ``SpanRow``'s order)."""
        attributes = span._attributes
        events = span._events
        links = span._links
        status = span._status
        self._append(
            (
                *_identity(span._name, span._context, span._parent),
                span._kind.value,
                span._start_time,
                span._end_time,
                # BoundedAttributes keeps a plain dict: copying that is one C call.
                dict(getattr(attributes, "_dict", attributes)) if attributes else None,
                getattr(attributes, "dropped", 0),
                _events(events),
                getattr(events, "dropped", 0),
                tuple(
                    (
                        ln.context.trace_id,
                        ln.context.span_id,
                        ln.context.is_remote,
                        int(ln.context.trace_flags),
                        dict(ln.attributes) if ln.attributes else None,
                        ln.dropped_attributes,
                    )
                    for ln in links
                )
                if links
                else (),
                getattr(links, "dropped", 0),
                status.status_code.value,
                status.description,
                self._resource_index(span._resource),
                self._scope_index(span._instrumentation_scope),
            )
        )

    def add_light(self, span: Any, resource: Any, scope: Any) -> None:
        """``add`` for an ended light span (``otelbot.core.lightspan.LightSpan``), read from
        its own fields: its attribute dict is its own and no longer changes, it has no
        links and nothing dropped."""
        status = span._status
        self._append(
            (
                *_identity(span._name, span._context, span._parent),
                span._kind.value,
                span._start,
                span._end,
                span._attributes or None,
                0,
                _events(span._events),
                0,
                (),
                0,
                status.status_code.value,
                status.description,
                self._resource_index(resource),
                self._scope_index(scope),
            )
        )

    def __len__(self) -> int:
        return self.count

    def payload(self) -> bytes:
        self._seal()
        batch = (
            FORMAT_VERSION,
            tuple(self.resource_table),
            tuple(self.scope_table),
            tuple(self.chunks),
        )
        try:
            return marshal.dumps(batch)
        except ValueError:  # a str-enum resource or scope attribute value
            return marshal.dumps(_plain(batch))


class DecodedBatch(NamedTuple):
    """A batch as the helper reads it."""

    #: ``(attributes, schema_url)`` per resource index
    resources: tuple[tuple[dict[str, Any], str], ...]
    #: ``(name, version, schema_url, attributes)`` or ``None`` per scope index
    scopes: tuple[tuple[str, str | None, str | None, dict[str, Any]] | None, ...]
    rows: list[SpanRow]


def read_batch(payload: bytes) -> DecodedBatch:
    """Decode a payload written by ``SpanBatch.payload``."""
    raw = read_rows(payload)
    make = SpanRow._make
    return DecodedBatch(raw.resources, raw.scopes, [make(values) for values in raw.rows])


class RawBatch:
    """A batch with its rows as plain tuples (in ``SpanRow``'s order), for the encoder
    (``otelbot.export.otlp.encode_rows``): no named tuple per row. Its length is its
    number of spans."""

    __slots__ = ("resources", "rows", "scopes")

    def __init__(
        self,
        resources: tuple[tuple[dict[str, Any], str], ...],
        scopes: tuple[tuple[str, str | None, str | None, dict[str, Any]] | None, ...],
        rows: list[tuple[Any, ...]],
    ) -> None:
        self.resources = resources
        self.scopes = scopes
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)


def read_rows(payload: bytes) -> RawBatch:
    """Decode a payload written by ``SpanBatch.payload``, rows as plain tuples."""
    version, resources, scopes, chunks = marshal.loads(payload)
    if version != FORMAT_VERSION:
        raise ValueError(f"span batch format {version}, expected {FORMAT_VERSION}")
    return RawBatch(resources, scopes, [row for chunk in chunks for row in marshal.loads(chunk)])


def _identity(name: str, context: Any, parent: Any) -> tuple[Any, ...]:
    """A row's first six fields: name, trace id, span id, flags, trace state, parent."""
    return (
        name,
        context.trace_id,
        context.span_id,
        int(context.trace_flags),
        tuple(context.trace_state.items()) if context.trace_state else (),
        None
        if parent is None
        else (parent.trace_id, parent.span_id, parent.is_remote, int(parent.trace_flags)),
    )


def _events(events: Any) -> tuple[EventRow, ...]:
    if not events:
        return ()
    return tuple(
        (e.name, e.timestamp, dict(e.attributes) if e.attributes else None, e.dropped_attributes)
        for e in events
    )


_PLAIN_TYPES = (bool, int, float, str, bytes)


def _plain(value: Any) -> Any:
    """``value`` with subclasses of the attribute types (enums, ``TraceFlags``) replaced by
    their base type, so that ``marshal`` takes it."""
    if value is None or type(value) in _PLAIN_TYPES:
        return value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    for base in _PLAIN_TYPES:
        if isinstance(value, base):
            return str.__str__(value) if base is str else cast(Any, base)(value)
    return str(value)
