# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled fast path of the OTLP protobuf decoder (optional; built by ``make install``).

``decode_spans`` reads an ``ExportTraceServiceRequest`` straight from the wire format into
Keel ``Span`` objects, skipping the per-field Python objects that the upb message API creates.
It handles the common shape of a payload only. On anything else (a limit reached, an invalid
id, a nested or bytes attribute value, links, a repeated sub-message, invalid UTF-8, a
malformed or truncated body) it returns ``None`` and the caller decodes the whole request with
the pure-Python decoder in ``keel.otlp.decode``, which owns every error and rejection message.
So the fast path may only ever produce exactly what the Python path would (tested in
``tests/otlp/test_fastpb.py`` on real fixtures, random messages and mutated bodies).
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

# set from keel.otlp.decode's limits on every call
cdef int64_t MAX_STRING_BYTES = 0
cdef Py_ssize_t MAX_ATTRIBUTES = 0
cdef Py_ssize_t MAX_EVENTS = 0
cdef Py_ssize_t MAX_NAME_CHARS = 0
cdef uint64_t MAX_TIME_NS = 9223372036854775807ULL

cdef const char* HEX = b"0123456789abcdef"


class _Fallback(Exception):
    pass


cdef struct Cur:
    const unsigned char* p
    const unsigned char* end


cdef inline int _varint(Cur* c, uint64_t* out) noexcept:
    cdef uint64_t r = 0
    cdef int shift = 0
    cdef unsigned char b
    while c.p < c.end:
        b = c.p[0]
        c.p += 1
        r |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            out[0] = r
            return 0
        shift += 7
        if shift > 63:
            return -1
    return -1


cdef inline int _fixed64(Cur* c, uint64_t* out) noexcept:
    if c.end - c.p < 8:
        return -1
    memcpy(out, c.p, 8)  # little-endian on every platform we build for
    c.p += 8
    return 0


cdef inline int _len(Cur* c, Cur* sub) noexcept:
    cdef uint64_t n
    if _varint(c, &n) < 0:
        return -1
    if n > <uint64_t>(c.end - c.p):
        return -1
    sub.p = c.p
    sub.end = c.p + n
    c.p += n
    return 0


cdef inline int _skip(Cur* c, uint64_t wt) noexcept:
    cdef uint64_t v
    cdef Cur sub
    if wt == 0:
        return _varint(c, &v)
    if wt == 1:
        if c.end - c.p < 8:
            return -1
        c.p += 8
        return 0
    if wt == 2:
        return _len(c, &sub)
    if wt == 5:
        if c.end - c.p < 4:
            return -1
        c.p += 4
        return 0
    return -1  # groups (3, 4) and invalid wire types: let the slow path judge


cdef inline int _tag(Cur* c, uint64_t* field, uint64_t* wt) noexcept:
    cdef uint64_t k
    if _varint(c, &k) < 0:
        return -1
    field[0] = k >> 3
    wt[0] = k & 7
    if field[0] == 0 or field[0] > 536870911:
        return -1
    return 0


cdef inline str _str(Cur* s):
    """UTF-8 text (strict, like upb's check); raises _Fallback on invalid bytes or a huge value."""
    cdef Py_ssize_t n = s.end - s.p
    if n > MAX_STRING_BYTES:
        raise _Fallback()
    try:
        return PyUnicode_DecodeUTF8(<const char*>s.p, n, "strict")
    except UnicodeDecodeError:
        raise _Fallback()


cdef inline str _hex(Cur* s):
    cdef Py_ssize_t n = s.end - s.p
    cdef char buf[64]
    cdef Py_ssize_t i
    cdef unsigned char b
    if n > 32:
        raise _Fallback()
    for i in range(n):
        b = s.p[i]
        buf[2 * i] = HEX[b >> 4]
        buf[2 * i + 1] = HEX[b & 15]
    return PyUnicode_DecodeUTF8(buf, 2 * n, "strict")


cdef inline bint _all_zero(Cur* s) noexcept:
    cdef const unsigned char* p = s.p
    while p < s.end:
        if p[0] != 0:
            return False
        p += 1
    return True


cdef object _scalar(Cur* c, bint in_array):
    """An AnyValue holding a scalar (or nothing); nested values and bytes fall back."""
    cdef uint64_t field, wt, v
    cdef Cur sub
    cdef object val = None
    cdef int seen = 0
    cdef double d
    while c.p < c.end:
        if _tag(c, &field, &wt) < 0:
            raise _Fallback()
        seen += 1
        if seen > 1:
            raise _Fallback()  # two oneof members (or a repeated array): rare, let upb decide
        if field == 1 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            val = _str(&sub)
        elif field == 2 and wt == 0:
            if _varint(c, &v) < 0:
                raise _Fallback()
            val = v != 0
        elif field == 3 and wt == 0:
            if _varint(c, &v) < 0:
                raise _Fallback()
            val = <int64_t>v
        elif field == 4 and wt == 1:
            if _fixed64(c, &v) < 0:
                raise _Fallback()
            memcpy(&d, &v, 8)
            val = d
        elif field == 5 and wt == 2 and not in_array:
            if _len(c, &sub) < 0:
                raise _Fallback()
            val = _array(&sub)
        else:
            raise _Fallback()
    return val


cdef list _array(Cur* c):
    cdef uint64_t field, wt
    cdef Cur sub
    cdef list out = []
    while c.p < c.end:
        if _tag(c, &field, &wt) < 0 or field != 1 or wt != 2:
            raise _Fallback()
        if _len(c, &sub) < 0:
            raise _Fallback()
        out.append(_scalar(&sub, True))
    return out


cdef int _attrs(Cur* c, dict out) except -1:
    """One KeyValue message into ``out`` (the caller loops over the repeated field)."""
    cdef uint64_t field, wt
    cdef Cur sub
    cdef object key = None
    cdef object val = None
    cdef int nval = 0
    while c.p < c.end:
        if _tag(c, &field, &wt) < 0:
            raise _Fallback()
        if field == 1 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            key = _str(&sub)
        elif field == 2 and wt == 2:
            nval += 1
            if nval > 1 or _len(c, &sub) < 0:
                raise _Fallback()
            val = _scalar(&sub, False)
        else:
            raise _Fallback()
    if key is None:
        key = ""
    out[key] = val
    if len(out) > MAX_ATTRIBUTES:
        raise _Fallback()
    return 0


cdef int _check_only(Cur* c) except -1:
    """Validate a string field we do not keep (upb would refuse invalid UTF-8 in it)."""
    _str(c)
    return 0


cdef object _event(Cur* c, object construct, object event_cls):
    cdef uint64_t field, wt, t = 0
    cdef Cur sub
    cdef str name = ""
    cdef dict attrs = {}
    cdef Py_ssize_t nattrs = 0
    while c.p < c.end:
        if _tag(c, &field, &wt) < 0:
            raise _Fallback()
        if field == 1 and wt == 1:
            if _fixed64(c, &t) < 0:
                raise _Fallback()
        elif field == 2 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            name = _str(&sub)
        elif field == 3 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            _attrs(&sub, attrs)
            nattrs += 1
            if nattrs > MAX_ATTRIBUTES:
                raise _Fallback()
        elif field == 4 and wt == 0:
            if _skip(c, wt) < 0:
                raise _Fallback()
        else:
            raise _Fallback()
    return construct(event_cls, {"name": name, "time_ns": t, "attributes": attrs})


cdef object _span(Cur* c, dict resource, object scope, str project_id,
                  object construct, object span_cls, object event_cls,
                  tuple kinds, tuple statuses):
    cdef uint64_t field, wt, v
    cdef Cur sub, st, tid, sid, pid
    cdef uint64_t start = 0, end = 0
    cdef int64_t kind = 0, code = 0
    cdef str name = ""
    cdef object status_message = None
    cdef dict attrs = {}
    cdef list events = []
    cdef Py_ssize_t nattrs = 0
    cdef int nstatus = 0
    cdef bint has_pid = False
    tid.p = tid.end = NULL
    sid.p = sid.end = NULL
    pid.p = pid.end = NULL
    while c.p < c.end:
        if _tag(c, &field, &wt) < 0:
            raise _Fallback()
        if field == 1 and wt == 2:
            if _len(c, &tid) < 0:
                raise _Fallback()
        elif field == 2 and wt == 2:
            if _len(c, &sid) < 0:
                raise _Fallback()
        elif field == 3 and wt == 2:  # trace_state: not kept, but must be valid UTF-8
            if _len(c, &sub) < 0:
                raise _Fallback()
            _check_only(&sub)
        elif field == 4 and wt == 2:
            if _len(c, &pid) < 0:
                raise _Fallback()
            has_pid = True
        elif field == 5 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            name = _str(&sub)
        elif field == 6 and wt == 0:
            if _varint(c, &v) < 0:
                raise _Fallback()
            kind = <int32_t><uint32_t>v
        elif field == 7 and wt == 1:
            if _fixed64(c, &start) < 0:
                raise _Fallback()
        elif field == 8 and wt == 1:
            if _fixed64(c, &end) < 0:
                raise _Fallback()
        elif field == 9 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            _attrs(&sub, attrs)
            nattrs += 1
            if nattrs > MAX_ATTRIBUTES:
                raise _Fallback()
        elif field == 11 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            events.append(_event(&sub, construct, event_cls))
            if len(events) > MAX_EVENTS:
                raise _Fallback()
        elif field == 15 and wt == 2:
            nstatus += 1
            if nstatus > 1 or _len(c, &st) < 0:
                raise _Fallback()
            while st.p < st.end:
                if _tag(&st, &field, &wt) < 0:
                    raise _Fallback()
                if field == 2 and wt == 2:
                    if _len(&st, &sub) < 0:
                        raise _Fallback()
                    status_message = _str(&sub) or None
                elif field == 3 and wt == 0:
                    if _varint(&st, &v) < 0:
                        raise _Fallback()
                    code = <int32_t><uint32_t>v
                else:
                    raise _Fallback()
        elif (field == 10 or field == 12 or field == 14) and wt == 0:
            if _skip(c, wt) < 0:
                raise _Fallback()
        elif field == 16 and wt == 5:
            if _skip(c, wt) < 0:
                raise _Fallback()
        else:
            raise _Fallback()  # links (13), unknown fields, wrong wire types
    if tid.end - tid.p != 16 or _all_zero(&tid):
        raise _Fallback()
    if sid.end - sid.p != 8 or _all_zero(&sid):
        raise _Fallback()
    parent = None
    if has_pid and pid.end != pid.p:
        if pid.end - pid.p != 8:
            raise _Fallback()
        if not _all_zero(&pid):
            parent = _hex(&pid)
    if len(name) > MAX_NAME_CHARS:
        raise _Fallback()
    if start > MAX_TIME_NS or end > MAX_TIME_NS:
        raise _Fallback()
    return construct(
        span_cls,
        {
            "trace_id": _hex(&tid),
            "span_id": _hex(&sid),
            "parent_span_id": parent,
            "name": name,
            "kind": kinds[kind] if 0 <= kind < 6 else kinds[0],
            "start_time_ns": start,
            "end_time_ns": end,
            "status": statuses[code] if 0 <= code < 3 else statuses[0],
            "status_message": status_message,
            "attributes": attrs,
            "events": events,
            "resource": resource,
            "scope": scope,
            "project_id": project_id,
        },
    )


cdef int _resource(Cur* c, dict out) except -1:
    cdef uint64_t field, wt
    cdef Cur sub
    cdef Py_ssize_t n = 0
    while c.p < c.end:
        if _tag(c, &field, &wt) < 0:
            raise _Fallback()
        if field == 1 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            _attrs(&sub, out)
            n += 1
            if n > MAX_ATTRIBUTES:
                raise _Fallback()
        elif field == 2 and wt == 0:
            if _skip(c, wt) < 0:
                raise _Fallback()
        else:
            raise _Fallback()  # entity refs and unknown fields
    return 0


cdef object _scope(Cur* c):
    cdef uint64_t field, wt
    cdef Cur sub
    cdef str name = ""
    cdef dict ignored = {}
    while c.p < c.end:
        if _tag(c, &field, &wt) < 0:
            raise _Fallback()
        if field == 1 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            name = _str(&sub)
        elif field == 2 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            _check_only(&sub)
        elif field == 3 and wt == 2:
            if _len(c, &sub) < 0:
                raise _Fallback()
            _attrs(&sub, ignored)
        elif field == 4 and wt == 0:
            if _skip(c, wt) < 0:
                raise _Fallback()
        else:
            raise _Fallback()
    return name or None


def decode_spans(const unsigned char[:] body not None, str project_id, object construct,
                 object span_cls, object event_cls, tuple kinds, tuple statuses, tuple limits):
    """Spans of an ExportTraceServiceRequest, or None when the Python decoder must decide.

    ``limits`` is ``(max_string_bytes, max_attributes, max_events, max_name_chars)``, the
    Python decoder's (one source of truth: a value over a limit makes this step aside).
    """
    global MAX_STRING_BYTES, MAX_ATTRIBUTES, MAX_EVENTS, MAX_NAME_CHARS
    MAX_STRING_BYTES, MAX_ATTRIBUTES, MAX_EVENTS, MAX_NAME_CHARS = limits
    cdef Cur c, rs, sub, ss, sc, c2
    cdef uint64_t field, wt
    cdef list out = []
    cdef dict resource
    cdef object scope
    cdef int nres, nscope
    if body.shape[0] == 0:
        return out
    c.p = &body[0]
    c.end = c.p + body.shape[0]
    try:
        while c.p < c.end:
            if _tag(&c, &field, &wt) < 0 or field != 1 or wt != 2:
                return None
            if _len(&c, &rs) < 0:
                return None
            # A ResourceSpans: its resource may come after its scope spans on the wire, so
            # read the resource first, then the spans.
            resource = {}
            nres = 0
            sub = rs
            while sub.p < sub.end:
                if _tag(&sub, &field, &wt) < 0:
                    return None
                if field == 1 and wt == 2:
                    nres += 1
                    if nres > 1 or _len(&sub, &ss) < 0:
                        return None
                    _resource(&ss, resource)
                elif field == 3 and wt == 2:
                    if _len(&sub, &ss) < 0:
                        return None
                    _check_only(&ss)
                elif field == 2 and wt == 2:
                    if _len(&sub, &ss) < 0:
                        return None
                else:
                    return None
            sub = rs
            while sub.p < sub.end:
                _tag(&sub, &field, &wt)
                if field != 2:
                    _skip(&sub, wt)
                    continue
                _len(&sub, &ss)
                scope = None
                nscope = 0
                # the scope first (it may follow the spans on the wire), then the spans
                sc = ss
                while sc.p < sc.end:
                    if _tag(&sc, &field, &wt) < 0:
                        return None
                    if field == 1 and wt == 2:
                        nscope += 1
                        if nscope > 1 or _len(&sc, &c2) < 0:
                            return None
                        scope = _scope(&c2)
                    elif (field == 2 or field == 3) and wt == 2:
                        if _len(&sc, &c2) < 0:
                            return None
                        if field == 3:
                            _check_only(&c2)
                    else:
                        return None
                sc = ss
                while sc.p < sc.end:
                    _tag(&sc, &field, &wt)
                    _len(&sc, &c2)
                    if field == 2:
                        out.append(_span(&c2, resource, scope, project_id, construct,
                                         span_cls, event_cls, kinds, statuses))
    except _Fallback:
        return None
    return out


def count_spans(const unsigned char[:] body not None):
    """How many spans an ExportTraceServiceRequest holds (walking the wire format only), or
    -1 when it is not well formed. Used for queue accounting before the body is decoded."""
    cdef Cur c, rs, ss, sp
    cdef uint64_t field, wt
    cdef Py_ssize_t n = 0
    if body.shape[0] == 0:
        return 0
    c.p = &body[0]
    c.end = c.p + body.shape[0]
    while c.p < c.end:
        if _tag(&c, &field, &wt) < 0 or wt != 2 or _len(&c, &rs) < 0:
            return -1
        if field != 1:
            continue
        while rs.p < rs.end:
            if _tag(&rs, &field, &wt) < 0:
                return -1
            if field != 2 or wt != 2:
                if _skip(&rs, wt) < 0:
                    return -1
                continue
            if _len(&rs, &ss) < 0:
                return -1
            while ss.p < ss.end:
                if _tag(&ss, &field, &wt) < 0:
                    return -1
                if field == 2 and wt == 2:
                    if _len(&ss, &sp) < 0:
                        return -1
                    n += 1
                elif _skip(&ss, wt) < 0:
                    return -1
    return n
