"""OTLP trace requests written straight to protobuf wire format, without message objects.

    from otelbot.export.otlp import encode_spans, encode_rows
    body = encode_spans(ended_spans)   # SDK ReadableSpans and otelbot light spans
    body = encode_rows(read_rows(payload))  # the export helper's rows (otelbot.export.rows)
    # body: a serialized ExportTraceServiceRequest, byte for byte what the SDK's
    # encode_spans(spans).SerializePartialToString() gives for the same spans

The SDK's encoder builds a protobuf object for every span, attribute, value, event and
status, then serializes them: ~55 µs per span with six attributes on this kind of machine,
most of it building the objects (serializing alone is ~1 µs). This module writes the same
bytes with ``bytes`` joins and ``struct``: tags and fixed-width fields are constants, an
attribute's key is encoded once per process, a string attribute (key and value) once while
it keeps recurring, and each resource and instrumentation scope once per request (their
bytes are kept by identity).

What it writes follows the SDK's encoder (``opentelemetry.exporter.otlp.proto.common``)
field for field, including what that encoder leaves out or adds: spans are grouped by equal
resource, then by equal scope (name, version, schema URL, attributes), in the order first
seen; the
span ``flags`` carry only the has-is-remote and is-remote bits of the parent's context
(links: of the link's context), never the trace flags; links carry no trace state; a
status is always written, a resource's and scope's dropped-attribute counts never; an
attribute whose value protobuf would refuse (an int outside int64, a string with lone
surrogates, a value of another type) is left out, as the SDK does (it logs it too).
tests/export/test_otlp_encode.py compares the output with the SDK's for every field.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

logger = logging.getLogger("otelbot")

_u64 = struct.Struct("<Q").pack
_u32 = struct.Struct("<I").pack
_f64 = struct.Struct("<d").pack
#: trace id (field 1, 16 bytes) and span id (field 2, 8 bytes) of a span, a link
_IDS = struct.Struct(">HQQHQ").pack
#: start (field 7) and end (field 8) times, fixed64
_TIMES = struct.Struct("<BQBQ").pack
_PARENT = struct.Struct(">HQ").pack
_M64 = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

_SMALL = [bytes((n,)) for n in range(128)]


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n]
    if n < 16384:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: its tag, the body's length, the body."""
    n = len(body)
    return tag + (_SMALL[n] if n < 128 else _varint(n)) + body


# -------------------------------------------------------------------------------- values

_TRUE = b"\x10\x01"  # AnyValue.bool_value (2)
_FALSE = b"\x10\x00"
#: the empty AnyValue the SDK writes for None
_NONE = b""
#: a bounded cache: values that stop recurring (ids, messages) do not pile up
_CACHE_MAX = 4096


class _Refused(Exception):
    """A value protobuf would not take: the SDK leaves its attribute out."""


def _value(value: Any) -> bytes:
    """The body of the AnyValue the SDK writes for ``value`` (same type tests, same order)."""
    t = type(value)
    if t is str:
        return _field(b"\x0a", value.encode())
    if t is int:
        if 0 <= value <= _INT64_MAX:
            return b"\x18" + _varint(value)
        if _INT64_MIN <= value < 0:
            return b"\x18" + _varint(value & _M64)
        raise _Refused(f"int {value} out of the int64 range")
    if t is bool:
        return _TRUE if value else _FALSE
    if t is float:
        return b"\x21" + _f64(value)
    if value is None:
        return _NONE
    return _other_value(value)


def _other_value(value: Any) -> bytes:
    if isinstance(value, bool):
        return _TRUE if value else _FALSE
    if isinstance(value, str):
        return _field(b"\x0a", str.encode(value))
    if isinstance(value, int):
        return _value(int(value))
    if isinstance(value, float):
        return b"\x21" + _f64(float(value))
    if isinstance(value, bytes):
        return _field(b"\x3a", bytes(value))
    if isinstance(value, Sequence):
        array = b"".join([_field(b"\x0a", _value(v)) for v in value])
        return _field(b"\x2a", array)
    if isinstance(value, Mapping):
        pairs = b"".join([_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()])
        return _field(b"\x32", pairs)
    raise _Refused(f"invalid type {type(value).__name__}")


_KEYS: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    """KeyValue.key (1), encoded once per process."""
    found = _KEYS.get(key)
    if found is None:
        found = _field(b"\x0a", key.encode()) if key else b""
        if len(_KEYS) >= _CACHE_MAX:
            _KEYS.clear()
        _KEYS[key] = found
    return found


def _key_value(key: str, value: Any) -> bytes:
    """The body of a KeyValue: its key, and its value (always written, even empty)."""
    return _key(key) + _field(b"\x12", _value(value))


_said_refused = False


def _refused(key: str, error: Exception) -> None:
    global _said_refused
    if not _said_refused:
        _said_refused = True
        logger.warning(
            "otelbot: span attribute %r left out of the OTLP export (%s; said once)", key, error
        )


#: (key, string value) -> the whole span attribute field (tag 9), while it recurs
_SPAN_STRINGS: dict[tuple[str, str], bytes] = {}


def _attributes(tag: bytes, attributes: Mapping[str, Any]) -> list[bytes]:
    """One ``tag`` field per attribute (a KeyValue each), in the mapping's order."""
    out = []
    for key, value in attributes.items():
        try:
            out.append(_field(tag, _key_value(key, value)))
        except (_Refused, UnicodeError, TypeError, ValueError, OverflowError) as error:
            _refused(key, error)
    return out


def _span_attributes(attributes: Mapping[str, Any], out: list[bytes]) -> None:
    """Span attributes (field 9) appended to ``out``; a recurring string attribute is
    looked up whole, a non-negative int written here."""
    strings = _SPAN_STRINGS
    keys = _KEYS
    for key, value in attributes.items():
        t = type(value)
        if t is str:
            found = strings.get((key, value))
            if found is not None:
                out.append(found)
                continue
        elif t is int and 0 <= value <= _INT64_MAX:
            k = keys.get(key)
            if k is not None:
                v = _SMALL[value] if value < 128 else _varint(value)
                kv = k + b"\x12" + _SMALL[len(v) + 1] + b"\x18" + v
                n = len(kv)
                out.append(b"\x4a" + (_SMALL[n] if n < 128 else _varint(n)) + kv)
                continue
        try:
            field = _field(b"\x4a", _key_value(key, value))
        except (_Refused, UnicodeError, TypeError, ValueError, OverflowError) as error:
            _refused(key, error)
            continue
        if t is str and len(value) < 512:
            if len(strings) >= _CACHE_MAX:
                strings.clear()
            strings[(key, value)] = field
        out.append(field)


def _plain_attributes(attributes: Any) -> Any:
    """The plain dict behind the SDK's ``BoundedAttributes`` (iterating the mapping
    itself goes through its lock and the ABC's views)."""
    if type(attributes) is dict:
        return attributes
    return getattr(attributes, "_dict", attributes)


# -------------------------------------------------------------------------------- spans

#: SpanKind value -> the kind field (6): the OTLP enum is the SDK's value + 1
_KINDS = [b"\x30" + _SMALL[v + 1] for v in range(5)]
_FLAGS_LOCAL = b"\x85\x01" + _u32(0x100)  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK
_FLAGS_REMOTE = b"\x85\x01" + _u32(0x300)  # ... | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK
_LINK_FLAGS_LOCAL = b"\x35" + _u32(0x100)
_LINK_FLAGS_REMOTE = b"\x35" + _u32(0x300)
#: status code value -> the status field (15) without a message
_STATUS = [_field(b"\x7a", b"\x18" + _SMALL[code] if code else b"") for code in range(3)]

_NAMES: dict[str, bytes] = {}


def _name(name: str) -> bytes:
    found = _NAMES.get(name)
    if found is None:
        found = _field(b"\x2a", name.encode()) if name else b""
        if len(_NAMES) >= _CACHE_MAX:
            _NAMES.clear()
        _NAMES[name] = found
    return found


def _status(code: int, description: str | None) -> bytes:
    if not description:
        return _STATUS[code]
    body = _field(b"\x12", description.encode())
    if code:
        body += b"\x18" + _varint(code)
    return _field(b"\x7a", body)


#: The status field for the last ``Status`` object seen: the SDK and light spans share
#: one unset ``Status``, so this is a hit for all but error spans.
_last_status: tuple[Any, bytes] = (None, b"")


def _status_of(status: Any) -> bytes:
    global _last_status
    last = _last_status
    if status is last[0]:
        return last[1]
    encoded = _status(status.status_code.value, status.description)
    _last_status = (status, encoded)
    return encoded


def _trace_state(items: Iterable[tuple[str, str]]) -> bytes:
    text = ",".join([f"{k}={v}" for k, v in items])
    return _field(b"\x1a", text.encode()) if text else b""


def _times(start: int | None, end: int | None) -> bytes:
    if start and end:
        return _TIMES(0x39, start, 0x41, end)
    return (b"\x39" + _u64(start) if start else b"") + (b"\x41" + _u64(end) if end else b"")


def _event(name: str, timestamp: int | None, attributes: Any, dropped: int) -> bytes:
    body = [b"\x09" + _u64(timestamp)] if timestamp else []
    if name:
        body.append(_field(b"\x12", name.encode()))
    if attributes:
        body += _attributes(b"\x1a", _plain_attributes(attributes))
    if dropped:
        body.append(b"\x20" + _varint(dropped))
    return _field(b"\x5a", b"".join(body))


def _link(trace_id: int, span_id: int, remote: bool, attributes: Any, dropped: int) -> bytes:
    body = [_IDS(0x0A10, trace_id >> 64, trace_id & _M64, 0x1208, span_id)]
    if attributes:
        body += _attributes(b"\x22", _plain_attributes(attributes))
    if dropped:
        body.append(b"\x28" + _varint(dropped))
    body.append(_LINK_FLAGS_REMOTE if remote else _LINK_FLAGS_LOCAL)
    return _field(b"\x6a", b"".join(body))


def _span_field(body: list[bytes]) -> bytes:
    """ScopeSpans.spans (2): the span's fields joined, length-prefixed."""
    data = b"".join(body)
    n = len(data)
    return b"\x12" + (_SMALL[n] if n < 128 else _varint(n)) + data


def _context_reader() -> tuple[Any, Any, Any]:
    """Readers of a ``SpanContext``'s (trace id, span id), (span id, is remote) and trace
    state: by position where the API's ``SpanContext`` is the tuple it is today (a C call,
    where each property is a Python one), else by name."""
    from operator import attrgetter, itemgetter

    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    state = TraceState([("k", "v")])
    probe = SpanContext(3, 5, True, TraceFlags(1), state)
    by_position = (itemgetter(0, 1), itemgetter(1, 2), itemgetter(4))
    try:
        if (
            by_position[0](probe) == (3, 5)
            and by_position[1](probe) == (5, True)
            and by_position[2](probe) is state
        ):
            return by_position
    except (TypeError, IndexError):
        pass
    return (
        attrgetter("trace_id", "span_id"),
        attrgetter("span_id", "is_remote"),
        attrgetter("trace_state"),
    )


_ids_of, _parent_of, _state_of = _context_reader()


def _sdk_classes() -> tuple[Any, Any, Any, dict[int, bytes]]:
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.util import BoundedList
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.span import DEFAULT_TRACE_STATE

    kinds = {id(kind): _KINDS[kind.value] for kind in SpanKind}
    return BoundedAttributes, BoundedList, DEFAULT_TRACE_STATE, kinds


_BoundedAttributes, _BoundedList, _NO_STATE, _KIND_BY_ID = _sdk_classes()


def _head(span: Any) -> tuple[list[bytes], bool]:
    """The fields every span starts with (ids, trace state, parent, name, kind), from the
    attributes an SDK span and a light span share; and whether the parent is remote."""
    context = span._context
    trace_id, span_id = _ids_of(context)
    body = [_IDS(0x0A10, trace_id >> 64, trace_id & _M64, 0x1208, span_id)]
    state = _state_of(context)
    if state is not _NO_STATE and state:
        body.append(_trace_state(state.items()))
    parent = span._parent
    remote = False
    if parent is not None:
        parent_id, remote = _parent_of(parent)
        body.append(_PARENT(0x2208, parent_id))
    body.append(_name(span._name))
    kind = span._kind
    body.append(_KIND_BY_ID.get(id(kind)) or _KINDS[kind.value])
    return body, remote


def _sdk_span(span: Any) -> bytes:
    """One ``ReadableSpan`` (the SDK's, or the SDK ``Span`` it was) as a ScopeSpans.spans
    field."""
    body, remote = _head(span)
    body.append(_times(span._start_time, span._end_time))
    attributes = span._attributes
    if attributes is not None:
        if type(attributes) is _BoundedAttributes:
            if attributes._dict:
                _span_attributes(attributes._dict, body)
            if attributes.dropped:
                body.append(b"\x50" + _varint(attributes.dropped))
        elif attributes:
            _span_attributes(_plain_attributes(attributes), body)
            dropped = getattr(attributes, "dropped", 0)
            if dropped:
                body.append(b"\x50" + _varint(dropped))
    events = span._events
    if type(events) is _BoundedList:
        dropped_events = events.dropped
        events = events._dq
    else:
        dropped_events = getattr(events, "dropped", 0)
    if events:
        for e in events:
            body.append(_event(e.name, e.timestamp, e.attributes, e.dropped_attributes))
    if dropped_events:
        body.append(b"\x60" + _varint(dropped_events))
    links = span._links
    if type(links) is _BoundedList:
        dropped_links = links.dropped
        links = links._dq
    else:
        dropped_links = getattr(links, "dropped", 0)
    if links:
        for ln in links:
            c = ln.context
            body.append(
                _link(c.trace_id, c.span_id, c.is_remote, ln.attributes, ln.dropped_attributes)
            )
    if dropped_links:
        body.append(b"\x70" + _varint(dropped_links))
    status = span._status
    if status is not None:
        body.append(_status_of(status))
    body.append(_FLAGS_REMOTE if remote else _FLAGS_LOCAL)
    return _span_field(body)


def _light_span(span: Any) -> bytes:
    """One ended light span (``otelbot.core.lightspan.LightSpan``): its own attribute dict
    and event list, no links, nothing dropped."""
    body, remote = _head(span)
    body.append(_times(span._start, span._end))
    if span._attributes:
        _span_attributes(span._attributes, body)
    for e in span._events:
        body.append(_event(e.name, e.timestamp, e.attributes, e.dropped_attributes))
    body.append(_status_of(span._status))
    body.append(_FLAGS_REMOTE if remote else _FLAGS_LOCAL)
    return _span_field(body)


# ---------------------------------------------------------------------- resource, scope


def _resource_field(attributes: Mapping[str, Any]) -> bytes:
    """ResourceSpans.resource (1): a Resource with its attributes."""
    return _field(b"\x0a", b"".join(_attributes(b"\x0a", _plain_attributes(attributes))))


def _scope_field(
    name: str | None, version: str | None, attributes: Mapping[str, Any] | None
) -> bytes:
    """ScopeSpans.scope (1): an InstrumentationScope (written, empty, when there is none)."""
    body = []
    if name:
        body.append(_field(b"\x0a", name.encode()))
    if version:
        body.append(_field(b"\x12", version.encode()))
    if attributes:
        body += _attributes(b"\x1a", _plain_attributes(attributes))
    return _field(b"\x0a", b"".join(body))


def _schema_field(url: str | None) -> bytes:
    """ResourceSpans.schema_url and ScopeSpans.schema_url are both field 3."""
    return _field(b"\x1a", url.encode()) if url else b""


class _Group:
    """The spans of one scope under one resource, as encoded span fields."""

    __slots__ = ("head", "spans", "tail")

    def __init__(self, head: bytes, tail: bytes) -> None:
        self.head = head  # the scope field
        self.tail = tail  # the scope's schema URL field
        self.spans: list[bytes] = []


class _Request:
    """Groups of encoded spans by resource, then scope, in the order first seen."""

    __slots__ = ("resources",)

    def __init__(self) -> None:
        #: (resource key, resource field, schema field, [(scope key, group)])
        self.resources: list[tuple[Any, bytes, bytes, list[tuple[Any, _Group]]]] = []

    def group(
        self,
        resource_key: Any,
        resource_bytes: Any,
        scope_key: Any,
        scope_bytes: Any,
    ) -> _Group:
        """The group for a resource and a scope compared by value (keys), as the SDK's
        encoder groups them; ``*_bytes`` are called for a new one."""
        scopes = next((entry[3] for entry in self.resources if entry[0] == resource_key), None)
        if scopes is None:
            res, url = resource_bytes()
            scopes = []
            self.resources.append((resource_key, res, url, scopes))
        for key, group in scopes:
            if key == scope_key:
                return group
        head, tail = scope_bytes()
        group = _Group(head, tail)
        scopes.append((scope_key, group))
        return group

    def payload(self) -> bytes:
        out = []
        for _key, res, url, scopes in self.resources:
            parts = [res]
            for _skey, group in scopes:
                parts.append(_field(b"\x12", group.head + b"".join(group.spans) + group.tail))
            parts.append(url)
            out.append(_field(b"\x0a", b"".join(parts)))
        return b"".join(out)


#: id(resource or scope) -> (the object, so its id is not reused, its encoded fields)
_RESOURCES: dict[int, tuple[Any, tuple[bytes, bytes]]] = {}
_SCOPES: dict[int, tuple[Any, tuple[bytes, bytes]]] = {}


def _resource_bytes(resource: Any) -> tuple[bytes, bytes]:
    found = _RESOURCES.get(id(resource))
    if found is None or found[0] is not resource:
        if len(_RESOURCES) >= 64:
            _RESOURCES.clear()
        found = _RESOURCES[id(resource)] = (
            resource,
            (_resource_field(resource.attributes), _schema_field(resource.schema_url)),
        )
    return found[1]


def _scope_bytes(scope: Any) -> tuple[bytes, bytes]:
    found = _SCOPES.get(id(scope))
    if found is None or found[0] is not scope:
        if len(_SCOPES) >= 256:
            _SCOPES.clear()
        encoded = (
            (_field(b"\x0a", b""), b"")
            if scope is None
            else (
                _scope_field(scope.name, scope.version, scope.attributes),
                _schema_field(scope.schema_url),
            )
        )
        found = _SCOPES[id(scope)] = (scope, encoded)
    return found[1]


def encode_spans(spans: Iterable[Any]) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` for SDK ``ReadableSpan``s and ended
    light spans."""
    from otelbot.core.lightspan import LightSpan

    request = _Request()
    groups: dict[tuple[int, int], tuple[Any, Any, _Group]] = {}
    last_key: tuple[int, int] | None = None
    last: _Group | None = None
    for span in spans:
        if type(span) is LightSpan:
            owner = span._owner
            resource, scope = owner.resource, owner.scope
            encoded = _light_span(span)
        else:
            resource, scope = span._resource, span._instrumentation_scope
            encoded = _sdk_span(span)
        key = (id(resource), id(scope))
        if key != last_key or last is None:
            found = groups.get(key)
            if found is None or found[0] is not resource or found[1] is not scope:
                group = request.group(
                    resource,
                    lambda r=resource: _resource_bytes(r),
                    scope,
                    lambda s=scope: _scope_bytes(s),
                )
                found = groups[key] = (resource, scope, group)
            last_key, last = key, found[2]
        last.spans.append(encoded)
    return request.payload()


# ---------------------------------------------------------------------------------- rows


def _row_span(row: Sequence[Any]) -> bytes:
    """One ``otelbot.export.rows`` row (``SpanRow``'s order) as a ScopeSpans.spans field."""
    (
        name,
        trace_id,
        span_id,
        _trace_flags,
        trace_state,
        parent,
        kind,
        start,
        end,
        attributes,
        dropped_attributes,
        events,
        dropped_events,
        links,
        dropped_links,
        status_code,
        status_description,
        _resource,
        _scope,
    ) = row
    body = [_IDS(0x0A10, trace_id >> 64, trace_id & _M64, 0x1208, span_id)]
    if trace_state:
        body.append(_trace_state(trace_state))
    if parent is not None:
        body.append(_PARENT(0x2208, parent[1]))
    body.append(_name(name))
    body.append(_KINDS[kind])
    body.append(_times(start, end))
    if attributes:
        _span_attributes(attributes, body)
    if dropped_attributes:
        body.append(b"\x50" + _varint(dropped_attributes))
    for e_name, e_time, e_attributes, e_dropped in events:
        body.append(_event(e_name, e_time, e_attributes, e_dropped))
    if dropped_events:
        body.append(b"\x60" + _varint(dropped_events))
    for l_trace, l_span, l_remote, _l_flags, l_attributes, l_dropped in links:
        body.append(_link(l_trace, l_span, l_remote, l_attributes, l_dropped))
    if dropped_links:
        body.append(b"\x70" + _varint(dropped_links))
    body.append(_status(status_code, status_description))
    body.append(_FLAGS_REMOTE if parent is not None and parent[2] else _FLAGS_LOCAL)
    return _span_field(body)


def encode_rows(
    resources: Sequence[tuple[Mapping[str, Any], str]],
    scopes: Sequence[tuple[str, str | None, str | None, Mapping[str, Any]] | None],
    rows: Iterable[Sequence[Any]],
) -> bytes:
    """A serialized ``ExportTraceServiceRequest`` for one batch of rows and the batch's
    resource and scope tables (``otelbot.export.rows.read_rows``)."""
    request = _Request()
    groups: dict[tuple[int, int], _Group] = {}
    for row in rows:
        key = (row[17], row[18])
        group = groups.get(key)
        if group is None:
            attributes, schema_url = resources[key[0]]
            scope = scopes[key[1]]
            group = groups[key] = request.group(
                (attributes, schema_url or ""),
                lambda a=attributes, u=schema_url: (_resource_field(a), _schema_field(u)),
                scope,
                lambda s=scope: (
                    (_field(b"\x0a", b""), b"")
                    if s is None
                    else (_scope_field(s[0], s[1], s[3]), _schema_field(s[2]))
                ),
            )
        group.spans.append(_row_span(row))
    return request.payload()
