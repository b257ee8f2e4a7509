"""A small ctypes layer over ``liblilv-0.so.0``: discover LV2 plugins, read their ports, instantiate them.

No Python binding of lilv exists in Debian or on PyPI, so this module declares the few lilv calls it needs and
talks to the plugin itself through the ``LV2_Descriptor`` function pointers: the ``lilv_instance_*`` helpers
(run, connect_port, activate, ...) are ``static inline`` in ``lilv.h`` and are not exported by the library.
Only the runtime library is needed (``apt-get install liblilv-0-0``); it is loaded lazily on first use.

The host side of an instance (:class:`HostFeatures`) provides:

- ``urid:map`` / ``urid:unmap``: one process-wide URI <-> URID table (LSP plugins require ``urid:map``),
- ``options:options``: ``bufsz:minBlockLength`` / ``maxBlockLength`` / ``nominalBlockLength`` = the block
  size, ``bufsz:sequenceSize`` and ``param:sampleRate``, and with it the block-length guarantees
  ``bufsz:boundedBlockLength``, ``bufsz:fixedBlockLength`` and (if the block is a power of two)
  ``bufsz:powerOf2BlockLength``: the host always runs exactly ``block_size`` frames,
- ``worker:schedule``: the plugin's ``work()`` is run synchronously, inside the ``schedule_work`` call (the
  spec allows that for offline rendering); its responses are delivered with ``work_response()`` right after
  ``run()`` returns, followed by ``end_run()`` after every ``run()`` (as the spec requires),
- ``lv2:isLive`` (a flag without data), and the plugin-side properties ``lv2:hardRTCapable`` and
  ``lv2:inPlaceBroken`` (buffers are never shared) which some plugins wrongly list as required features.

lilv itself does not check a plugin's required features (guitarix segfaults without ``urid:map``, ``options``
and ``worker:schedule``), so :meth:`Plugin.instantiate` refuses, before instantiating, a plugin that requires a
feature or an option this host does not provide, naming the plugin and the missing URIs.

A lilv world is not thread-safe: one world per process, every lilv query under one lock. Instances are
independent of the world once created and are driven without the lock (ctypes releases the GIL while a plugin
runs).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

from .base import PluginUnavailable

LILV_SONAME = "liblilv-0.so.0"
INSTALL_HINT = "sudo apt-get install liblilv-0-0"

# ---------------------------------------------------------------------------------------------- URIs


class URI:
    """The LV2 URIs this host uses."""

    LV2 = "http://lv2plug.in/ns/lv2core#"
    AUDIO_PORT = LV2 + "AudioPort"
    CONTROL_PORT = LV2 + "ControlPort"
    CV_PORT = LV2 + "CVPort"
    INPUT_PORT = LV2 + "InputPort"
    OUTPUT_PORT = LV2 + "OutputPort"
    ATOM_PORT = "http://lv2plug.in/ns/ext/atom#AtomPort"
    EVENT_PORT = "http://lv2plug.in/ns/ext/event#EventPort"
    INTEGER = LV2 + "integer"
    TOGGLED = LV2 + "toggled"
    ENUMERATION = LV2 + "enumeration"
    SAMPLE_RATE = LV2 + "sampleRate"
    CONNECTION_OPTIONAL = LV2 + "connectionOptional"
    REPORTS_LATENCY = LV2 + "reportsLatency"
    LATENCY = LV2 + "latency"
    DESIGNATION = LV2 + "designation"
    IS_LIVE = LV2 + "isLive"
    HARD_RT_CAPABLE = LV2 + "hardRTCapable"
    IN_PLACE_BROKEN = LV2 + "inPlaceBroken"
    LOGARITHMIC = "http://lv2plug.in/ns/ext/port-props#logarithmic"
    UNITS_UNIT = "http://lv2plug.in/ns/extensions/units#unit"
    UNITS_SYMBOL = "http://lv2plug.in/ns/extensions/units#symbol"
    URID_MAP = "http://lv2plug.in/ns/ext/urid#map"
    URID_UNMAP = "http://lv2plug.in/ns/ext/urid#unmap"
    OPTIONS = "http://lv2plug.in/ns/ext/options#options"
    REQUIRED_OPTION = "http://lv2plug.in/ns/ext/options#requiredOption"
    WORKER_SCHEDULE = "http://lv2plug.in/ns/ext/worker#schedule"
    WORKER_INTERFACE = "http://lv2plug.in/ns/ext/worker#interface"
    BUFSZ = "http://lv2plug.in/ns/ext/buf-size#"
    BOUNDED_BLOCK = BUFSZ + "boundedBlockLength"
    FIXED_BLOCK = BUFSZ + "fixedBlockLength"
    POW2_BLOCK = BUFSZ + "powerOf2BlockLength"
    MIN_BLOCK = BUFSZ + "minBlockLength"
    MAX_BLOCK = BUFSZ + "maxBlockLength"
    NOMINAL_BLOCK = BUFSZ + "nominalBlockLength"
    SEQUENCE_SIZE = BUFSZ + "sequenceSize"
    PARAM_SAMPLE_RATE = "http://lv2plug.in/ns/ext/parameters#sampleRate"
    ATOM_INT = "http://lv2plug.in/ns/ext/atom#Int"
    ATOM_FLOAT = "http://lv2plug.in/ns/ext/atom#Float"
    ATOM_SEQUENCE = "http://lv2plug.in/ns/ext/atom#Sequence"
    ATOM_CHUNK = "http://lv2plug.in/ns/ext/atom#Chunk"


# ---------------------------------------------------------------------------------------------- C types

c_void_p, c_char_p, c_uint32, c_float, c_double, c_bool = (
    ctypes.c_void_p,
    ctypes.c_char_p,
    ctypes.c_uint32,
    ctypes.c_float,
    ctypes.c_double,
    ctypes.c_bool,
)


class LV2_Feature(ctypes.Structure):
    _fields_ = [("URI", c_char_p), ("data", c_void_p)]


CONNECT_PORT_FN = ctypes.CFUNCTYPE(None, c_void_p, c_uint32, c_void_p)
HANDLE_FN = ctypes.CFUNCTYPE(None, c_void_p)
RUN_FN = ctypes.CFUNCTYPE(None, c_void_p, c_uint32)
EXTENSION_DATA_FN = ctypes.CFUNCTYPE(c_void_p, c_char_p)


class LV2_Descriptor(ctypes.Structure):
    _fields_ = [
        ("URI", c_char_p),
        ("instantiate", c_void_p),
        ("connect_port", CONNECT_PORT_FN),
        ("activate", HANDLE_FN),
        ("run", RUN_FN),
        ("deactivate", HANDLE_FN),
        ("cleanup", HANDLE_FN),
        ("extension_data", EXTENSION_DATA_FN),
    ]


class LilvInstanceImpl(ctypes.Structure):
    """``struct LilvInstanceImpl`` (public in lilv.h so that the instance calls can be inlined)."""

    _fields_ = [("lv2_descriptor", ctypes.POINTER(LV2_Descriptor)), ("lv2_handle", c_void_p), ("pimpl", c_void_p)]


URID_MAP_FN = ctypes.CFUNCTYPE(c_uint32, c_void_p, c_char_p)
URID_UNMAP_FN = ctypes.CFUNCTYPE(c_void_p, c_void_p, c_uint32)  # returns const char* (kept alive by the table)


class LV2_URID_Map(ctypes.Structure):
    _fields_ = [("handle", c_void_p), ("map", URID_MAP_FN)]


class LV2_URID_Unmap(ctypes.Structure):
    _fields_ = [("handle", c_void_p), ("unmap", URID_UNMAP_FN)]


class LV2_Options_Option(ctypes.Structure):
    _fields_ = [
        ("context", ctypes.c_int),  # LV2_OPTIONS_INSTANCE = 0
        ("subject", c_uint32),
        ("key", c_uint32),
        ("size", c_uint32),
        ("type", c_uint32),
        ("value", c_void_p),
    ]


WORKER_RESPOND_FN = ctypes.CFUNCTYPE(ctypes.c_int, c_void_p, c_uint32, c_void_p)
WORKER_WORK_FN = ctypes.CFUNCTYPE(ctypes.c_int, c_void_p, WORKER_RESPOND_FN, c_void_p, c_uint32, c_void_p)
WORKER_RESPONSE_FN = ctypes.CFUNCTYPE(ctypes.c_int, c_void_p, c_uint32, c_void_p)
WORKER_END_RUN_FN = ctypes.CFUNCTYPE(ctypes.c_int, c_void_p)
WORKER_SCHEDULE_FN = ctypes.CFUNCTYPE(ctypes.c_int, c_void_p, c_uint32, c_void_p)


class LV2_Worker_Interface(ctypes.Structure):
    _fields_ = [("work", WORKER_WORK_FN), ("work_response", WORKER_RESPONSE_FN), ("end_run", WORKER_END_RUN_FN)]


class LV2_Worker_Schedule(ctypes.Structure):
    _fields_ = [("handle", c_void_p), ("schedule_work", WORKER_SCHEDULE_FN)]


LV2_WORKER_SUCCESS, LV2_WORKER_ERR_UNKNOWN = 0, 1

# ---------------------------------------------------------------------------------------------- the library

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()

_P = c_void_p
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "lilv_world_new": (_P, []),
    "lilv_world_free": (None, [_P]),
    "lilv_world_load_all": (None, [_P]),
    "lilv_world_get_all_plugins": (_P, [_P]),
    "lilv_world_get": (_P, [_P, _P, _P, _P]),
    "lilv_new_uri": (_P, [_P, c_char_p]),
    "lilv_new_string": (_P, [_P, c_char_p]),
    "lilv_node_free": (None, [_P]),
    "lilv_node_as_uri": (c_char_p, [_P]),
    "lilv_node_as_string": (c_char_p, [_P]),
    "lilv_node_is_uri": (c_bool, [_P]),
    "lilv_node_is_blank": (c_bool, [_P]),
    "lilv_nodes_free": (None, [_P]),
    "lilv_nodes_size": (ctypes.c_uint, [_P]),
    "lilv_nodes_begin": (_P, [_P]),
    "lilv_nodes_get": (_P, [_P, _P]),
    "lilv_nodes_next": (_P, [_P, _P]),
    "lilv_nodes_is_end": (c_bool, [_P, _P]),
    "lilv_plugins_size": (ctypes.c_uint, [_P]),
    "lilv_plugins_begin": (_P, [_P]),
    "lilv_plugins_get": (_P, [_P, _P]),
    "lilv_plugins_next": (_P, [_P, _P]),
    "lilv_plugins_is_end": (c_bool, [_P, _P]),
    "lilv_plugins_get_by_uri": (_P, [_P, _P]),
    "lilv_plugin_get_uri": (_P, [_P]),
    "lilv_plugin_get_name": (_P, [_P]),
    "lilv_plugin_get_value": (_P, [_P, _P]),
    "lilv_plugin_get_num_ports": (c_uint32, [_P]),
    "lilv_plugin_get_port_ranges_float": (None, [_P, _P, _P, _P]),
    "lilv_plugin_get_port_by_index": (_P, [_P, c_uint32]),
    "lilv_plugin_get_required_features": (_P, [_P]),
    "lilv_plugin_get_extension_data": (_P, [_P]),
    "lilv_plugin_instantiate": (_P, [_P, c_double, _P]),
    "lilv_instance_free": (None, [_P]),
    "lilv_port_get_symbol": (_P, [_P, _P]),
    "lilv_port_get_name": (_P, [_P, _P]),
    "lilv_port_get": (_P, [_P, _P, _P]),
    "lilv_port_is_a": (c_bool, [_P, _P, _P]),
    "lilv_port_has_property": (c_bool, [_P, _P, _P]),
    "lilv_port_get_scale_points": (_P, [_P, _P]),
    "lilv_scale_points_free": (None, [_P]),
    "lilv_scale_points_begin": (_P, [_P]),
    "lilv_scale_points_get": (_P, [_P, _P]),
    "lilv_scale_points_next": (_P, [_P, _P]),
    "lilv_scale_points_is_end": (c_bool, [_P, _P]),
    "lilv_scale_point_get_label": (_P, [_P]),
    "lilv_scale_point_get_value": (_P, [_P]),
    "lilv_node_as_float": (ctypes.c_float, [_P]),
}


def library() -> ctypes.CDLL:
    """``liblilv-0.so.0``, loaded on first use (raises :class:`PluginUnavailable` when it is not installed)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            candidates = [LILV_SONAME]
            found = ctypes.util.find_library("lilv-0")
            if found and found not in candidates:
                candidates.append(found)
            errors = []
            for name in candidates:
                try:
                    lib = ctypes.CDLL(name)
                    break
                except OSError as exc:
                    errors.append(f"{name}: {exc}")
            else:
                raise PluginUnavailable(
                    f"LV2 support needs the lilv library ({LILV_SONAME}), which could not be loaded "
                    f"({'; '.join(errors)}); on Debian/Ubuntu: {INSTALL_HINT}"
                )
            for fn_name, (restype, argtypes) in _SIGNATURES.items():
                fn = getattr(lib, fn_name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib = lib
    return _lib


def lilv_available() -> bool:
    try:
        library()
    except PluginUnavailable:
        return False
    return True


# ---------------------------------------------------------------------------------------------- URID map

_urid_lock = threading.Lock()
_uri_to_urid: dict[str, int] = {}
_urid_to_buffer: dict[int, ctypes.Array] = {}  # NUL-terminated copies, alive for the process (unmap returns them)


def map_uri(uri: str) -> int:
    """The process-wide URID of ``uri`` (URIDs start at 1; 0 means "no URID")."""
    urid = _uri_to_urid.get(uri)
    if urid is not None:
        return urid
    with _urid_lock:
        urid = _uri_to_urid.get(uri)
        if urid is None:
            urid = len(_uri_to_urid) + 1
            _urid_to_buffer[urid] = ctypes.create_string_buffer(uri.encode())
            _uri_to_urid[uri] = urid
    return urid


def _c_map(handle, uri):  # called by plugins, possibly from their own threads
    try:
        return map_uri(uri.decode()) if uri else 0
    except Exception:  # never let an exception cross into C
        return 0


def _c_unmap(handle, urid):
    buf = _urid_to_buffer.get(int(urid))
    return ctypes.addressof(buf) if buf is not None else None


_C_MAP = URID_MAP_FN(_c_map)
_C_UNMAP = URID_UNMAP_FN(_c_unmap)
_URID_MAP = LV2_URID_Map(None, _C_MAP)
_URID_UNMAP = LV2_URID_Unmap(None, _C_UNMAP)

# ---------------------------------------------------------------------------------------------- host features

#: Feature URIs this host always satisfies (the block-size ones depend on the block: see HostFeatures).
ALWAYS_SUPPORTED = frozenset(
    {
        URI.URID_MAP,
        URI.URID_UNMAP,
        URI.OPTIONS,
        URI.WORKER_SCHEDULE,
        URI.BOUNDED_BLOCK,
        URI.FIXED_BLOCK,
        URI.IS_LIVE,
        URI.HARD_RT_CAPABLE,  # a plugin property, sometimes listed as a required feature
        URI.IN_PLACE_BROKEN,  # input and output buffers are never shared
    }
)


def supported_features(block_size: int) -> frozenset:
    extra = {URI.POW2_BLOCK} if block_size > 0 and block_size & (block_size - 1) == 0 else set()
    return ALWAYS_SUPPORTED | extra


def supported_options() -> frozenset:
    return frozenset({URI.MIN_BLOCK, URI.MAX_BLOCK, URI.NOMINAL_BLOCK, URI.SEQUENCE_SIZE, URI.PARAM_SAMPLE_RATE})


class _Worker:
    """``worker:schedule`` run synchronously: ``work()`` inside ``schedule_work``, responses after ``run()``."""

    def __init__(self) -> None:
        self.iface: LV2_Worker_Interface | None = None
        self.handle: int | None = None
        self._early: list[bytes] = []  # work scheduled before the instance handle was known
        self._responses: list[bytes] = []
        self._schedule_cb = WORKER_SCHEDULE_FN(self._schedule)
        self._respond_cb = WORKER_RESPOND_FN(self._respond)
        self.schedule = LV2_Worker_Schedule(None, self._schedule_cb)

    def bind(self, handle: int, iface_ptr: int | None) -> None:
        self.handle = handle
        if iface_ptr:
            self.iface = LV2_Worker_Interface.from_address(iface_ptr)
        early, self._early = self._early, []
        for payload in early:
            self._work(payload)

    def _schedule(self, handle, size, data) -> int:
        try:
            payload = ctypes.string_at(data, size) if size and data else b""
            if self.handle is None:
                self._early.append(payload)
                return LV2_WORKER_SUCCESS
            if self.iface is None or not self.iface.work:
                return LV2_WORKER_ERR_UNKNOWN
            return self._work(payload)
        except Exception:
            return LV2_WORKER_ERR_UNKNOWN

    def _work(self, payload: bytes) -> int:
        if self.iface is None or not self.iface.work:
            return LV2_WORKER_ERR_UNKNOWN
        buf = ctypes.create_string_buffer(payload, max(len(payload), 1))
        return int(self.iface.work(self.handle, self._respond_cb, None, len(payload), buf))

    def _respond(self, handle, size, data) -> int:
        try:
            self._responses.append(ctypes.string_at(data, size) if size and data else b"")
            return LV2_WORKER_SUCCESS
        except Exception:
            return LV2_WORKER_ERR_UNKNOWN

    @property
    def active(self) -> bool:
        return self.iface is not None

    def after_run(self) -> None:
        """Deliver the responses of this cycle, then ``end_run`` (called after every ``run()``)."""
        iface = self.iface
        if iface is None:
            return
        while self._responses:
            responses, self._responses = self._responses, []
            if iface.work_response:
                for payload in responses:
                    buf = ctypes.create_string_buffer(payload, max(len(payload), 1))
                    iface.work_response(self.handle, len(payload), buf)
        if iface.end_run:
            iface.end_run(self.handle)


class HostFeatures:
    """The ``LV2_Feature`` array handed to one instance, and everything it points to (kept alive with it)."""

    def __init__(self, sample_rate: float, block_size: int, sequence_size: int = 8192):
        self.block_size = int(block_size)
        self.sample_rate = float(sample_rate)
        self.sequence_size = int(sequence_size)
        self.worker = _Worker()
        self._block = ctypes.c_int32(self.block_size)
        self._seq = ctypes.c_int32(self.sequence_size)
        self._rate = ctypes.c_float(self.sample_rate)
        int_t, float_t = map_uri(URI.ATOM_INT), map_uri(URI.ATOM_FLOAT)
        entries = [
            (URI.MIN_BLOCK, int_t, self._block),
            (URI.MAX_BLOCK, int_t, self._block),
            (URI.NOMINAL_BLOCK, int_t, self._block),
            (URI.SEQUENCE_SIZE, int_t, self._seq),
            (URI.PARAM_SAMPLE_RATE, float_t, self._rate),
        ]
        self._options = (LV2_Options_Option * (len(entries) + 1))()
        for opt, (key, type_, value) in zip(self._options, entries):
            opt.context, opt.subject, opt.key = 0, 0, map_uri(key)
            opt.size, opt.type, opt.value = ctypes.sizeof(value), type_, ctypes.addressof(value)
        # the last option stays zeroed: the terminator
        data = {
            URI.URID_MAP: ctypes.addressof(_URID_MAP),
            URI.URID_UNMAP: ctypes.addressof(_URID_UNMAP),
            URI.OPTIONS: ctypes.addressof(self._options),
            URI.WORKER_SCHEDULE: ctypes.addressof(self.worker.schedule),
            URI.BOUNDED_BLOCK: None,
            URI.FIXED_BLOCK: None,
            URI.IS_LIVE: None,
        }
        if self.block_size & (self.block_size - 1) == 0:
            data[URI.POW2_BLOCK] = None
        # a bytes value assigned to a c_char_p field stays referenced by the struct (alive with it)
        self._features = [LV2_Feature(u.encode(), d) for u, d in data.items()]
        self.array = (ctypes.POINTER(LV2_Feature) * (len(self._features) + 1))(
            *[ctypes.pointer(f) for f in self._features]
        )  # NULL-terminated
        self.uris = frozenset(data)


# ---------------------------------------------------------------------------------------------- world


class _World:
    def __init__(self) -> None:
        lib = library()
        self.lib = lib
        self.lock = threading.RLock()
        self.ptr = lib.lilv_world_new()
        if not self.ptr:
            raise PluginUnavailable("lilv_world_new() failed")
        lib.lilv_world_load_all(self.ptr)
        self._nodes: dict[str, int] = {}
        self._plugins: dict[str, Plugin] = {}

    def node(self, uri: str) -> int:
        """An interned URI node (owned by the world, never freed)."""
        n = self._nodes.get(uri)
        if n is None:
            n = self.lib.lilv_new_uri(self.ptr, uri.encode())
            self._nodes[uri] = n
        return n

    def all_plugins(self) -> int:
        return self.lib.lilv_world_get_all_plugins(self.ptr)


_world: _World | None = None
_world_lock = threading.Lock()


def world() -> _World:
    global _world
    if _world is None:
        with _world_lock:
            if _world is None:
                _world = _World()
    return _world


def _node_str(lib, node: int) -> str | None:
    if not node:
        return None
    raw = lib.lilv_node_as_uri(node) if lib.lilv_node_is_uri(node) else lib.lilv_node_as_string(node)
    return raw.decode() if raw is not None else None


def _nodes_to_list(lib, nodes: int, free: bool = True) -> list[str]:
    out: list[str] = []
    if not nodes:
        return out
    it = lib.lilv_nodes_begin(nodes)
    while not lib.lilv_nodes_is_end(nodes, it):
        s = _node_str(lib, lib.lilv_nodes_get(nodes, it))
        if s is not None:
            out.append(s)
        it = lib.lilv_nodes_next(nodes, it)
    if free:
        lib.lilv_nodes_free(nodes)
    return out


def plugin_uris() -> list[str]:
    """The URIs of every installed LV2 plugin."""
    w = world()
    lib = w.lib
    with w.lock:
        plugins = w.all_plugins()
        out = []
        it = lib.lilv_plugins_begin(plugins)
        while not lib.lilv_plugins_is_end(plugins, it):
            p = lib.lilv_plugins_get(plugins, it)
            out.append(_node_str(lib, lib.lilv_plugin_get_uri(p)))
            it = lib.lilv_plugins_next(plugins, it)
    return out


def plugin_names() -> list[tuple[str, str]]:
    """(URI, name) of every installed LV2 plugin, without reading their ports (``afx effects list --installed``)."""
    w = world()
    lib = w.lib
    out: list[tuple[str, str]] = []
    with w.lock:
        plugins = w.all_plugins()
        it = lib.lilv_plugins_begin(plugins)
        while not lib.lilv_plugins_is_end(plugins, it):
            p = lib.lilv_plugins_get(plugins, it)
            uri = _node_str(lib, lib.lilv_plugin_get_uri(p)) or ""
            name_node = lib.lilv_plugin_get_name(p)
            name = _node_str(lib, name_node) or uri
            if name_node:
                lib.lilv_node_free(name_node)
            out.append((uri, name))
            it = lib.lilv_plugins_next(plugins, it)
    return out


def has_plugin(uri: str) -> bool:
    """Whether ``uri`` is installed (False also when lilv itself is missing)."""
    try:
        get_plugin(uri)
    except PluginUnavailable:
        return False
    return True


def get_plugin(uri: str, install_hint: str = "") -> Plugin:
    """The installed plugin ``uri`` (cached); :class:`PluginUnavailable` names what to install when it is absent."""
    w = world()
    with w.lock:
        cached = w._plugins.get(uri)
        if cached is not None:
            return cached
        ptr = w.lib.lilv_plugins_get_by_uri(w.all_plugins(), w.node(uri))
        if not ptr:
            hint = f"; install it with: sudo apt-get install {install_hint}" if install_hint else ""
            raise PluginUnavailable(
                f"LV2 plugin {uri} is not installed (searched LV2_PATH or the default /usr/lib/lv2, ~/.lv2){hint}"
            )
        plugin = Plugin(w, ptr, uri)
        w._plugins[uri] = plugin
        return plugin


# ---------------------------------------------------------------------------------------------- plugins


@dataclass(frozen=True)
class PortInfo:
    """What a host needs to know about one port."""

    index: int
    symbol: str
    name: str
    is_audio: bool
    is_control: bool
    is_cv: bool
    is_atom: bool
    is_event: bool
    is_input: bool
    is_output: bool
    minimum: float  # NaN when not given
    maximum: float
    default: float
    logarithmic: bool = False
    integer: bool = False
    toggled: bool = False
    enumeration: bool = False
    sample_rate: bool = False  # range is a fraction of the sample rate (lv2:sampleRate)
    connection_optional: bool = False
    reports_latency: bool = False  # lv2:reportsLatency property or lv2:designation lv2:latency
    unit: str = ""

    @property
    def kind(self) -> str:
        direction = "input" if self.is_input else "output" if self.is_output else "?"
        for flag, name in (
            (self.is_audio, "audio"),
            (self.is_control, "control"),
            (self.is_cv, "cv"),
            (self.is_atom, "atom"),
            (self.is_event, "event"),
        ):
            if flag:
                return f"{name} {direction}"
        return f"unknown {direction}"


class Plugin:
    """An installed LV2 plugin: its ports and requirements, and :meth:`instantiate`."""

    def __init__(self, w: _World, ptr: int, uri: str):
        self._world = w
        self.ptr = ptr
        self.uri = uri
        lib = w.lib
        name_node = lib.lilv_plugin_get_name(ptr)
        self.name = _node_str(lib, name_node) or uri
        if name_node:
            lib.lilv_node_free(name_node)
        n = int(lib.lilv_plugin_get_num_ports(ptr))
        mins, maxs, defs = (c_float * n)(), (c_float * n)(), (c_float * n)()
        lib.lilv_plugin_get_port_ranges_float(ptr, mins, maxs, defs)
        self.ports: tuple[PortInfo, ...] = tuple(self._port_info(i, mins[i], maxs[i], defs[i]) for i in range(n))
        self._by_symbol = {p.symbol: p for p in self.ports}
        self.required_features: tuple[str, ...] = tuple(_nodes_to_list(lib, lib.lilv_plugin_get_required_features(ptr)))
        self.required_options: tuple[str, ...] = tuple(
            _nodes_to_list(lib, lib.lilv_plugin_get_value(ptr, w.node(URI.REQUIRED_OPTION)))
        )
        self.extension_data: tuple[str, ...] = tuple(_nodes_to_list(lib, lib.lilv_plugin_get_extension_data(ptr)))

    def _port_info(self, index: int, lo: float, hi: float, default: float) -> PortInfo:
        w, lib, p = self._world, self._world.lib, self.ptr
        port = lib.lilv_plugin_get_port_by_index(p, index)
        sym = _node_str(lib, lib.lilv_port_get_symbol(p, port)) or f"port{index}"
        name_node = lib.lilv_port_get_name(p, port)
        name = _node_str(lib, name_node) or sym
        if name_node:
            lib.lilv_node_free(name_node)

        def is_a(uri: str) -> bool:
            return bool(lib.lilv_port_is_a(p, port, w.node(uri)))

        def has(uri: str) -> bool:
            return bool(lib.lilv_port_has_property(p, port, w.node(uri)))

        designation = lib.lilv_port_get(p, port, w.node(URI.DESIGNATION))
        designated_latency = _node_str(lib, designation) == URI.LATENCY
        if designation:
            lib.lilv_node_free(designation)
        return PortInfo(
            index=index,
            symbol=sym,
            name=name,
            is_audio=is_a(URI.AUDIO_PORT),
            is_control=is_a(URI.CONTROL_PORT),
            is_cv=is_a(URI.CV_PORT),
            is_atom=is_a(URI.ATOM_PORT),
            is_event=is_a(URI.EVENT_PORT),
            is_input=is_a(URI.INPUT_PORT),
            is_output=is_a(URI.OUTPUT_PORT),
            minimum=float(lo),
            maximum=float(hi),
            default=float(default),
            logarithmic=has(URI.LOGARITHMIC),
            integer=has(URI.INTEGER),
            toggled=has(URI.TOGGLED),
            enumeration=has(URI.ENUMERATION),
            sample_rate=has(URI.SAMPLE_RATE),
            connection_optional=has(URI.CONNECTION_OPTIONAL),
            reports_latency=has(URI.REPORTS_LATENCY) or designated_latency,
            unit=self._unit(port),
        )

    def _unit(self, port: int) -> str:
        """``units:unit``: a URI (``units:ms`` -> ``ms``) or a blank node with a ``units:symbol`` (LSP)."""
        w, lib = self._world, self._world.lib
        node = lib.lilv_port_get(self.ptr, port, w.node(URI.UNITS_UNIT))
        if not node:
            return ""
        try:
            if lib.lilv_node_is_uri(node):
                uri = _node_str(lib, node) or ""
                return uri.rsplit("#", 1)[-1]
            sym = lib.lilv_world_get(w.ptr, node, w.node(URI.UNITS_SYMBOL), None)
            if sym:
                out = _node_str(lib, sym) or ""
                lib.lilv_node_free(sym)
                return out
            return ""
        finally:
            lib.lilv_node_free(node)

    # -- queries

    def port(self, symbol: str) -> PortInfo:
        try:
            return self._by_symbol[symbol]
        except KeyError:
            raise KeyError(
                f"LV2 plugin {self.uri} has no port {symbol!r}; its ports: {[p.symbol for p in self.ports]}"
            ) from None

    def scale_points(self, symbol: str) -> list[tuple[float, str]]:
        """(value, label) of a port's ``lv2:scalePoint`` s, by value (an enumeration port's choices)."""
        w, lib = self._world, self._world.lib
        info = self.port(symbol)
        out: list[tuple[float, str]] = []
        with w.lock:
            port = lib.lilv_plugin_get_port_by_index(self.ptr, info.index)
            points = lib.lilv_port_get_scale_points(self.ptr, port)
            if not points:
                return out
            try:
                it = lib.lilv_scale_points_begin(points)
                while not lib.lilv_scale_points_is_end(points, it):
                    point = lib.lilv_scale_points_get(points, it)
                    value = float(lib.lilv_node_as_float(lib.lilv_scale_point_get_value(point)))
                    out.append((value, _node_str(lib, lib.lilv_scale_point_get_label(point)) or f"{value:g}"))
                    it = lib.lilv_scale_points_next(points, it)
            finally:
                lib.lilv_scale_points_free(points)
        return sorted(out)

    @property
    def latency_port(self) -> PortInfo | None:
        for p in self.ports:
            if p.reports_latency and p.is_control and p.is_output:
                return p
        return None

    def unsupported_requirements(self, block_size: int) -> tuple[list[str], list[str]]:
        """(required features, required options) that this host does not provide."""
        feats = supported_features(block_size)
        opts = supported_options()
        return (
            [f for f in self.required_features if f not in feats],
            [o for o in self.required_options if o not in opts],
        )

    def check_supported(self, block_size: int) -> None:
        """Refuse (``PluginUnavailable``) a plugin that requires what this host lacks: lilv does not check, and
        some plugins crash when a required feature is missing."""
        feats, opts = self.unsupported_requirements(block_size)
        if feats or opts:
            parts = []
            if feats:
                parts.append(f"features {feats}")
            if opts:
                parts.append(f"options {opts}")
            raise PluginUnavailable(
                f"LV2 plugin {self.uri} requires host {' and '.join(parts)} that this host does not provide "
                f"(it provides features {sorted(supported_features(block_size))} and options "
                f"{sorted(supported_options())}); refusing to instantiate it"
            )

    def instantiate(self, sample_rate: float, block_size: int) -> Instance:
        """A new, not yet activated instance (after :meth:`check_supported`)."""
        self.check_supported(block_size)
        host = HostFeatures(sample_rate, block_size)
        lib = self._world.lib
        with self._world.lock:
            ptr = lib.lilv_plugin_instantiate(self.ptr, float(sample_rate), ctypes.addressof(host.array))
        if not ptr:
            raise PluginUnavailable(
                f"LV2 plugin {self.uri} failed to instantiate at {sample_rate} Hz (lilv_plugin_instantiate "
                "returned NULL)"
            )
        return Instance(self, ptr, host)


class Instance:
    """One LV2 instance driven through its descriptor's function pointers. Not thread-safe; one user at a time."""

    def __init__(self, plugin: Plugin, ptr: int, host: HostFeatures):
        self.plugin = plugin
        self._lib = plugin._world.lib
        self._ptr: int | None = ptr
        self.host = host  # keeps the feature structs alive as long as the instance
        impl = LilvInstanceImpl.from_address(ptr)
        self.handle: int = impl.lv2_handle
        desc = impl.lv2_descriptor.contents
        self._desc = desc
        self._connect = desc.connect_port
        self._run = desc.run
        self._activate = desc.activate if desc.activate else None
        self._deactivate = desc.deactivate if desc.deactivate else None
        self._extension_data = desc.extension_data if desc.extension_data else None  # Invada: NULL
        self.active = False
        host.worker.bind(self.handle, self.extension(URI.WORKER_INTERFACE))
        self._worker = host.worker if host.worker.active else None

    @property
    def alive(self) -> bool:
        return self._ptr is not None

    def extension(self, uri: str) -> int | None:
        """``extension_data(uri)`` as an address, or None (also when the plugin has no ``extension_data``)."""
        if self._extension_data is None:
            return None
        return self._extension_data(uri.encode()) or None

    def connect_port(self, index: int, address: int | None) -> None:
        self._check()
        self._connect(self.handle, index, address)

    def activate(self) -> None:
        self._check()
        if not self.active:
            if self._activate is not None:
                self._activate(self.handle)
            self.active = True

    def run(self, frames: int) -> None:
        self._run(self.handle, frames)
        if self._worker is not None:
            self._worker.after_run()

    def deactivate(self) -> None:
        if self._ptr is not None and self.active:
            if self._deactivate is not None:
                self._deactivate(self.handle)
            self.active = False

    def free(self) -> None:
        """Deactivate (if active) and free: ``lilv_instance_free`` calls the plugin's ``cleanup``. Idempotent."""
        if self._ptr is None:
            return
        try:
            self.deactivate()
        finally:
            ptr, self._ptr = self._ptr, None
            self._lib.lilv_instance_free(ptr)

    def _check(self) -> None:
        if self._ptr is None:
            raise RuntimeError(f"LV2 instance of {self.plugin.uri} was already freed")

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass
