#!/usr/bin/env python3
"""stepgraph ParallelRunStep worker harness (protocol version 1).

The stepgraph engine starts ``python3 stepgraph_worker.py`` once per worker and
drives it with JSON lines: one object per line, UTF-8, engine -> worker on
stdin, worker -> engine on the *original* stdout.  The worker imports the
user's entry script (``init()`` / ``run(mini_batch)`` / optional
``shutdown()``), then serves ``run`` requests until ``shutdown`` or EOF.

Messages (the other side's types: steps/src/parallel_run/protocol.rs; examples
in the README's worker protocol section, tested against both sides)::

    -> {"type":"init", "protocol":1, "entry_script":..., ...}
    <- {"type":"ready","pid":N}  |  {"type":"init_failed","error":...} + exit 3
    -> {"type":"run","index":I,"kind":"files","files":[...]
        [,"partition_key_value":{...}][,"partitions":[{...}, ...]]}
    -> {"type":"run","index":I,"kind":"tabular","segments":[...],
        "partition_key_value":{...}[,"partitions":[{...}, ...]]}
    <- {"type":"result","index":I,"count":N[,"rows":[...]][,"columns":[...]]}
     | {"type":"error","index":I,"error":...}
    -> {"type":"shutdown"}
    <- {"type":"bye"} + exit 0
    malformed line / unknown type: <- {"type":"protocol_error",...} + exit 4

Paths (files, segment paths, folders in init) are JSON strings when they are
valid UTF-8, else ``{"b64": "<base64 of the raw bytes>"}``; the worker turns the
latter into ``os.fsdecode(bytes)`` (surrogateescape), which ``open()`` accepts.

A line is at most ``max_line_bytes`` (init; default 64 MiB) without its
newline; a result too long for it becomes an "error" reply instead.
Tracebacks sent in "error"/"init_failed" keep their first and last 4 KiB.

Details the engine can rely on:

* Worker -> engine lines are compact JSON, UTF-8 (non-ASCII unescaped), never
  containing NaN/Infinity.  Blank input lines are ignored.
* EOF on stdin: shutdown() is called, nothing is written, exit 0.
* A missing "protocol" field means 1; any other version, a second init, a run
  before init or a run without "index" is a protocol_error (exit 4).
* Anything going wrong for one mini-batch (unknown "kind", unreadable segment,
  run() raising or calling sys.exit(), a return value that is a str/bytes/dict
  or not iterable, rows that cannot be serialised) gives an "error" reply and
  the worker keeps serving.
* "columns" is only sent with append_row_format "csv".
* User code sees stdin as /dev/null; after init, fd 1 is
  logs/user/stdout/<node>/<process>.stdout.txt (a copy of stderr before, or
  without a log folder).

The harness ships ``azureml_user`` (Azure's ``EntryScript``) and ``azureml``,
a shim with ``azureml.core.Model.get_model_path`` and ``Run.get_context()``
that refuses every other ``azureml`` import (see ``azureml/_shim.py``).

Only the standard library is required.  Tabular mini-batches are DataFrames when
init says ``"tabular_format": "dataframe"`` (pandas must then be importable: init
fails otherwise) and lists of dicts with ``"records"``; without the field pandas is
used when importable.  ``STEPGRAPH_NO_PANDAS=1`` makes pandas count as missing.

Compatible with Python 3.8+.
"""
import base64
import csv
import datetime
import importlib.util
import inspect
import io
import json
import math
import os
import sys
import traceback

PROTOCOL_VERSION = 1

EXIT_OK = 0
EXIT_INIT_FAILED = 3
EXIT_PROTOCOL_ERROR = 4

ROW_FORMATS = ("text", "csv", "jsonl")

# The protocol's line limit (the engine's MAX_PROTOCOL_LINE; init may say otherwise).
MAX_LINE_BYTES = 64 * 1024 * 1024
# Bytes kept from each end of a long error text.
EXCERPT_BYTES = 4096

# CSV fields may be as long as a protocol line (the csv module's default is 128 KiB).
csv.field_size_limit(MAX_LINE_BYTES)


def decode_path(value):
    """A path from a protocol message: a str, or {"b64": ...} for a name that is not UTF-8."""
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        return os.fsdecode(base64.b64decode(value["b64"]))
    if isinstance(value, str):
        return value
    raise ValueError("not a path: %r" % (value,))


def excerpt(text):
    """``text`` whole when short, else its first and last 4 KiB around an omission mark."""
    data = text.encode("utf-8", "replace")
    if len(data) <= 2 * EXCERPT_BYTES + 256:
        return text
    head = data[:EXCERPT_BYTES].decode("utf-8", "ignore")
    tail = data[-EXCERPT_BYTES:].decode("utf-8", "ignore")
    omitted = len(data) - len(head.encode("utf-8")) - len(tail.encode("utf-8"))
    return "%s\n… %d bytes omitted …\n%s" % (head, omitted, tail)

HARNESS_DIR = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------
# Protocol channel


class ProtocolError(Exception):
    """The engine sent something this protocol version does not allow."""


class Channel(object):
    """The private JSON-lines pipe to the engine.

    Created before any user code runs; see :func:`open_channel`.
    """

    def __init__(self, reader, writer):
        self._reader = reader
        self._writer = writer

    @staticmethod
    def encode(message):
        """Serialise one message to a protocol line (bytes, newline included).

        Raises if the message cannot be represented (NaN, lone surrogates...),
        so callers can turn that into an error reply before writing anything.
        """
        text = json.dumps(
            message, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
        return text.encode("utf-8") + b"\n"

    def send_line(self, line):
        self._writer.write(line)
        self._writer.flush()

    def send(self, message):
        self.send_line(self.encode(message))

    def discard_output(self):
        """After the engine closed its end: point our fd at /dev/null so the
        unflushed buffer does not raise again (noisily) at interpreter exit."""
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._writer.fileno())
            os.close(devnull)
        except OSError:
            pass

    def receive(self):
        """Next message (a dict), or None at end of input.

        Blank lines are ignored.  Raises ProtocolError on anything that is not
        a JSON object with a string "type".
        """
        while True:
            raw = self._reader.readline()
            if not raw:
                return None
            if raw.strip():
                break
        try:
            message = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            raise ProtocolError("unparseable line (%s): %r" % (exc, raw[:200]))
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ProtocolError("expected a JSON object with a \"type\": %r" % raw[:200])
        return message


def open_channel():
    """Take stdin/stdout for the protocol and hide them from user code.

    After this, anything the user's code prints -- Python ``print``, C-level
    ``printf``, child processes -- lands on fd 1, which is now a copy of
    stderr (the engine logs it), and reading stdin gives EOF (/dev/null), so
    user code can neither corrupt nor swallow protocol lines.
    """
    sys.stdout.flush()
    # os.dup() makes non-inheritable descriptors (PEP 446), so subprocesses
    # started by the user never hold the protocol pipes open.
    writer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    reader = os.fdopen(os.dup(0), "rb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return Channel(reader, writer)


def _redirect_stdout(log_dir, agent_name):
    """Point fd 1 (what user code prints) at ``logs/user/stdout/<node>/<process>.stdout.txt``,
    where Azure keeps it; stderr stays the engine's ``logs/user/stderr/...`` file. Without a
    log folder, or when the file cannot be opened, fd 1 stays a copy of stderr."""
    if not log_dir:
        return
    from azureml_user import parallel_run

    path = parallel_run.user_log_path(log_dir, "stdout", ".stdout.txt", agent_name)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        sys.stderr.write("stepgraph worker: cannot open %r, prints go to stderr: %s\n" % (path, exc))
        return
    sys.stdout.flush()
    os.dup2(fd, 1)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)


# --------------------------------------------------------------------------
# Reading mini-batches


PANDAS_MISSING = (
    "tabular inputs need pandas in the step's environment: add pandas to "
    "environment.requirements"
)


def _import_pandas():
    """(pandas module or None, why not). STEPGRAPH_NO_PANDAS=1 makes pandas missing (tests)."""
    flag = os.environ.get("STEPGRAPH_NO_PANDAS", "").strip().lower()
    if flag not in ("", "0", "false", "no"):
        return None, "STEPGRAPH_NO_PANDAS is set"
    try:
        import pandas
    except ImportError as exc:
        return None, "cannot import pandas in %s: %s" % (sys.executable, exc)
    except Exception as exc:  # e.g. a pandas/numpy binary mismatch
        return None, "pandas is unusable in %s: %r" % (sys.executable, exc)
    return pandas, None


def _pandas():
    """The pandas module, or None when missing or disabled by STEPGRAPH_NO_PANDAS."""
    pandas, why = _import_pandas()
    if pandas is None and why and not why.startswith("cannot import"):
        sys.stderr.write("stepgraph worker: %s\n" % why)
    return pandas


def _read_segment_bytes(segment):
    """(header bytes, data bytes) of one tabular segment."""
    path = decode_path(segment["path"])
    header_end = int(segment.get("header_end") or 0)
    chunks = []
    with open(path, "rb") as f:
        header = f.read(header_end) if header_end > 0 else b""
        for start, end in segment.get("ranges") or ():
            start, end = int(start), int(end)
            if end <= start:
                continue
            f.seek(start)
            chunk = f.read(end - start)
            # The last line of a file may lack its newline; without one the
            # next range's first line would be glued onto it.
            if chunk and not chunk.endswith(b"\n"):
                chunk += b"\n"
            chunks.append(chunk)
    if header and not header.endswith(b"\n"):
        header += b"\n"
    return header, b"".join(chunks)


def _jsonl_records(data, path):
    records = []
    for number, line in enumerate(data.decode("utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ValueError(
                "%s: mini-batch line %d is not a JSON object: %r"
                % (path, number, line[:200])
            )
        records.append(record)
    return records


def _add_partition_columns(values, frame, rows, start):
    """Append a segment's partition values as columns (Azure's virtual columns): to the
    last frame, or to the dicts of ``rows`` from ``start`` on."""
    if not values:
        return
    if frame is not None:
        for key, value in values.items():
            if key not in frame.columns:
                frame[key] = value
        return
    for row in rows[start:]:
        for key, value in values.items():
            row.setdefault(key, value)


def read_tabular(segments, pd, partitions=None):
    """Rows of a tabular mini-batch: a DataFrame if ``pd`` is given, else a list of dicts.

    ``partitions`` (one dict per segment) are appended as columns after the file's own."""
    frames = []
    rows = []
    partitions = partitions or []
    for number, segment in enumerate(segments):
        values = partitions[number] if number < len(partitions) else None
        frames_before, rows_before = len(frames), len(rows)
        _read_one_segment(segment, pd, frames, rows)
        _add_partition_columns(
            values, frames[-1] if len(frames) > frames_before else None, rows, rows_before
        )
    if pd is None:
        return rows
    if not frames:
        return pd.DataFrame()
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _read_one_segment(segment, pd, frames, rows):
    """Read one segment into ``frames`` (with pandas) or ``rows``."""
    fmt = segment.get("format", "csv")
    header, data = _read_segment_bytes(segment)
    if fmt == "csv":
        if pd is not None:
            frames.append(pd.read_csv(io.BytesIO(header + data), encoding="utf-8-sig"))
        else:
            text = (header + data).decode("utf-8-sig")
            rows.extend(dict(r) for r in csv.DictReader(io.StringIO(text, newline="")))
    elif fmt == "jsonl":
        records = _jsonl_records(data, decode_path(segment["path"]))
        if pd is not None:
            # DataFrame(list of dicts) keeps the keys' first-seen order,
            # i.e. the file's column order; read_json would reorder/convert.
            frames.append(pd.DataFrame(records))
        else:
            rows.extend(records)
    else:
        raise ValueError("unsupported tabular format %r in segment %r" % (fmt, segment.get("path")))


class MiniBatchFileDataset(object):
    """``mini_batch_context.dataset`` for files: the mini-batch's subset of the dataset."""

    def __init__(self, paths, partitions, minibatch_index):
        self._paths = list(paths)
        self.partitions = [dict(p) for p in partitions] if partitions else [{} for _ in self._paths]
        self.minibatch_index = minibatch_index

    def to_path(self):
        """The mini-batch's files, as paths that open here (Azure: the files' paths)."""
        return list(self._paths)

    def partition_values(self):
        """Each file's partition values (from the dataset's partition_format), in order."""
        return [dict(p) for p in self.partitions]

    def __len__(self):
        return len(self._paths)

    def __iter__(self):
        return iter(self._paths)

    def __repr__(self):
        shown = ", ".join(repr(os.path.basename(p)) for p in self._paths[:3])
        more = " and %d more" % (len(self._paths) - 3) if len(self._paths) > 3 else ""
        return "FileDataset(mini-batch %s: %d file%s [%s%s])" % (
            self.minibatch_index,
            len(self._paths),
            "" if len(self._paths) == 1 else "s",
            shown,
            more,
        )


class MiniBatchTabularDataset(object):
    """``mini_batch_context.dataset`` for tabular inputs: the mini-batch's rows."""

    def __init__(self, data, minibatch_index):
        self._data = data
        self.minibatch_index = minibatch_index

    def to_pandas_dataframe(self):
        """The mini-batch's rows as a new pandas DataFrame (partition columns included)."""
        pd = sys.modules.get("pandas") or _pandas()
        if pd is None:
            raise ImportError("to_pandas_dataframe() needs pandas in the step's environment")
        if _is_dataframe(self._data):
            return self._data.copy()
        return pd.DataFrame(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        if _is_dataframe(self._data):
            columns = [str(c) for c in self._data.columns]
        else:
            columns = []
            for row in self._data:
                for key in row:
                    if key not in columns:
                        columns.append(key)
        return "TabularDataset(mini-batch %s: %d row%s, columns %r)" % (
            self.minibatch_index,
            len(self._data),
            "" if len(self._data) == 1 else "s",
            columns,
        )


class MiniBatchContext(object):
    """Second argument of ``run(mini_batch, mini_batch_context)``."""

    def __init__(self, partition_key_value, minibatch_index, dataset=None):
        self.partition_key_value = partition_key_value
        self.minibatch_index = minibatch_index
        self.dataset = dataset

    def __repr__(self):
        return "MiniBatchContext(partition_key_value=%r, minibatch_index=%r, dataset=%r)" % (
            self.partition_key_value,
            self.minibatch_index,
            self.dataset,
        )


def takes_context(func):
    """True if ``func`` has two (or more) positional parameters."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    return len(positional) >= 2


# --------------------------------------------------------------------------
# Formatting results


def _is_dataframe(value):
    # Checked through sys.modules: a script may import pandas itself (and
    # return a DataFrame) even when STEPGRAPH_NO_PANDAS disabled our use of it.
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, getattr(pd, "DataFrame", ()))


def _is_numpy_scalar(value):
    return type(value).__module__ == "numpy" and hasattr(value, "item")


def _is_missing(value):
    """None, float NaN, pandas NA/NaT."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    pd = sys.modules.get("pandas")
    if pd is not None and type(value).__module__.startswith("pandas"):
        try:
            return bool(pd.isna(value))
        except (TypeError, ValueError):
            return False
    if _is_numpy_scalar(value):
        try:
            return bool(value != value)  # NaN / NaT
        except (TypeError, ValueError):
            return False
    return False


def _json_value(value):
    """Convert to plain JSON data: numpy -> Python, NaN/NA -> None, dates -> ISO text.

    Anything else that json cannot represent is left alone, so json.dumps
    raises and the mini-batch reports an error.
    """
    if isinstance(value, (str, bool, int)) or value is None:
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return dict((k, _json_value(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if _is_missing(value):
        return None
    if isinstance(value, (datetime.date, datetime.time)):  # incl. pandas Timestamp
        return value.isoformat()
    if _is_numpy_scalar(value):
        return _json_value(value.item())
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # ndarray
        return _json_value(value.tolist())
    return value


def _csv_cell(value):
    """One CSV field: missing -> empty (like DataFrame.to_csv), numpy scalars via str().

    numpy scalars must not reach the csv module: it repr()s float subclasses,
    which under numpy 2 gives "np.float64(1.5)".
    """
    if _is_missing(value):
        return ""
    if _is_numpy_scalar(value):
        return str(value)
    return value


class _CsvLine(object):
    """Formats one sequence as one CSV line (no line terminator)."""

    def __init__(self):
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="")

    def __call__(self, values):
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow([_csv_cell(v) for v in values])
        return self._buffer.getvalue()


def normalise_result(result):
    """run()'s return value as (DataFrame or None, list of elements)."""
    if result is None:
        return None, []
    if _is_dataframe(result):
        return result, None
    if isinstance(result, (str, bytes, bytearray, dict)):
        raise TypeError(
            "run() must return a list, a tuple, another iterable of rows, a pandas "
            "DataFrame or None; got %s" % type(result).__name__
        )
    try:
        return None, list(result)
    except TypeError:
        raise TypeError(
            "run() must return a list, a tuple, another iterable of rows, a pandas "
            "DataFrame or None; got %s" % type(result).__name__
        )


def format_rows(frame, elements, row_format):
    """(rows, columns) for a result; columns is None unless row_format is csv with named fields."""
    columns = None
    if frame is not None:
        names = [str(c) for c in frame.columns]
        tuples = frame.itertuples(index=False, name=None)
        if row_format == "text":
            rows = [" ".join(str(v) for v in t) for t in tuples]
        elif row_format == "csv":
            line = _CsvLine()
            rows = [line(t) for t in tuples]
            columns = names
        else:
            rows = [
                json.dumps(
                    dict(zip(names, (_json_value(v) for v in t))),
                    ensure_ascii=False,
                    allow_nan=False,
                )
                for t in tuples
            ]
        return rows, columns

    if row_format == "text":
        return [str(x) for x in elements], None
    if row_format == "jsonl":
        return [json.dumps(_json_value(x), ensure_ascii=False, allow_nan=False) for x in elements], None

    # csv
    line = _CsvLine()
    if elements and all(isinstance(x, dict) for x in elements):
        # Union of keys in first-seen order: rows with a missing key get an
        # empty field instead of shifting the other fields left.
        columns = []
        seen = set()
        for element in elements:
            for key in element:
                if key not in seen:
                    seen.add(key)
                    columns.append(key)
        rows = [line([x.get(c) for c in columns]) for x in elements]
        return rows, [str(c) for c in columns]
    rows = []
    for x in elements:
        if isinstance(x, (list, tuple)):
            rows.append(line(x))
        elif isinstance(x, dict):
            rows.append(line(list(x.values())))
        else:
            rows.append(str(x))
    return rows, None


# --------------------------------------------------------------------------
# The worker


class InitError(Exception):
    """A problem with the entry script found by the harness (no traceback needed)."""


def _module_name(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    # Never replace a module that is already loaded (stdlib, our helpers):
    # a script called e.g. "json.py" or "entry_script.py" would otherwise
    # break everything importing that name.
    if stem in sys.modules:
        return "stepgraph_entry_" + stem
    return stem


def import_entry_script(path):
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InitError("cannot load entry script %r (not a Python source file?)" % path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _prepend_path(folder):
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)


def _failure_text():
    """Traceback of the exception being handled, with a hint for sys.exit()."""
    exc = sys.exc_info()[1]
    if isinstance(exc, InitError):
        return str(exc)
    text = traceback.format_exc()
    if isinstance(exc, SystemExit):
        text = (
            "user code called sys.exit(%r) (an argparse error prints its usage "
            "message to the worker's stderr log)\n%s" % (exc.code, text)
        )
    return text


class Worker(object):
    def __init__(self, channel):
        self.channel = channel
        self.module = None
        self.run_func = None
        self.run_with_context = False
        self.collect_rows = True
        self.row_format = "text"
        self.max_line_bytes = MAX_LINE_BYTES
        self._pd = None
        self._pd_loaded = False

    # -- main loop ---------------------------------------------------------

    def serve(self):
        """Handle messages until shutdown/EOF; returns the exit code."""
        while True:
            try:
                message = self.channel.receive()
                if message is None:  # engine closed our stdin (or died)
                    self.call_shutdown()
                    return EXIT_OK
                kind = message["type"]
                if kind == "init":
                    if self.module is not None:
                        raise ProtocolError("second init message")
                    version = message.get("protocol", PROTOCOL_VERSION)
                    if version != PROTOCOL_VERSION:
                        raise ProtocolError(
                            "unsupported protocol version %r (this worker speaks %d)"
                            % (version, PROTOCOL_VERSION)
                        )
                    if not self.handle_init(message):
                        return EXIT_INIT_FAILED
                elif kind == "run":
                    if self.module is None:
                        raise ProtocolError("run message before init")
                    if "index" not in message:
                        raise ProtocolError("run message without index")
                    self.handle_run(message)
                elif kind == "shutdown":
                    self.call_shutdown()
                    self.channel.send({"type": "bye"})
                    return EXIT_OK
                else:
                    raise ProtocolError("unknown message type %r" % kind)
            except ProtocolError as exc:
                sys.stderr.write("stepgraph worker: protocol error: %s\n" % exc)
                self.channel.send({"type": "protocol_error", "error": str(exc)})
                return EXIT_PROTOCOL_ERROR

    # -- init --------------------------------------------------------------

    def handle_init(self, message):
        try:
            self._init(message)
        except KeyboardInterrupt:
            raise
        except BaseException:
            text = _failure_text()
            sys.stderr.write("stepgraph worker: init failed:\n%s\n" % text)
            sys.stderr.flush()
            self.channel.send({"type": "init_failed", "error": excerpt(text)})
            return False
        self.channel.send({"type": "ready", "pid": os.getpid()})
        return True

    def _init(self, message):
        self.collect_rows = bool(message.get("collect_rows", True))
        limit = message.get("max_line_bytes")
        if isinstance(limit, int) and limit > 0:
            self.max_line_bytes = limit
            csv.field_size_limit(limit)
        for key in ("source_directory", "entry_script", "working_dir", "output_dir", "log_dir"):
            if message.get(key) is not None:
                message[key] = decode_path(message[key])
        if isinstance(message.get("side_inputs"), dict):
            message["side_inputs"] = dict(
                (k, decode_path(v)) for k, v in message["side_inputs"].items()
            )
        # What run() gets for tabular mini-batches: "dataframe" (pandas required: the step
        # fails here, at start, without it) or "records" (lists of dicts). Without the field
        # (direct protocol use, no tabular input) pandas is used when importable.
        self.tabular_format = message.get("tabular_format")
        if self.tabular_format not in (None, "dataframe", "records"):
            raise InitError(
                "unsupported tabular_format %r (expected dataframe or records)"
                % (self.tabular_format,)
            )
        if self.tabular_format == "dataframe":
            pandas, why = _import_pandas()
            if pandas is None:
                raise InitError("%s (%s)" % (PANDAS_MISSING, why))
            self._pd, self._pd_loaded = pandas, True
        elif self.tabular_format == "records":
            self._pd, self._pd_loaded = None, True
        self.row_format = message.get("append_row_format") or "text"
        if self.row_format not in ROW_FORMATS:
            raise InitError(
                "unsupported append_row_format %r (expected one of %s)"
                % (self.row_format, ", ".join(ROW_FORMATS))
            )

        source_dir = message.get("source_directory")
        entry = message.get("entry_script")
        if not entry:
            raise InitError("init message has no entry_script")
        if not os.path.isabs(entry) and source_dir:
            entry = os.path.join(source_dir, entry)
        entry = os.path.abspath(entry)
        if not os.path.isfile(entry):
            raise InitError("entry script not found: %s" % entry)

        # Load our helpers first, while the harness folder is still ahead of
        # the user's folders on sys.path, so a user file of the same name
        # cannot shadow them.
        from azureml_user import parallel_run
        import entry_script  # noqa: F401
        import azureml.core
        import azureml.core.model  # noqa: F401
        import azureml.core.run
        import azureml.exceptions  # noqa: F401

        sys.argv = [entry] + [str(a) for a in (message.get("arguments") or [])]
        # Resulting order: source_directory, the script's own folder (if
        # different, like `python script.py` would add), the harness folder.
        _prepend_path(HARNESS_DIR)
        _prepend_path(os.path.dirname(entry))
        if source_dir:
            source_dir = os.path.abspath(source_dir)
            if source_dir in sys.path:
                sys.path.remove(source_dir)
            sys.path.insert(0, source_dir)

        working_dir = message.get("working_dir")
        if working_dir and os.path.isdir(working_dir):
            os.chdir(working_dir)

        output_dir = message.get("output_dir")
        if output_dir:
            if not os.environ.get("AZUREML_BI_OUTPUT_PATH"):
                os.environ["AZUREML_BI_OUTPUT_PATH"] = output_dir
            try:
                os.makedirs(output_dir, exist_ok=True)
            except OSError:
                pass  # the script will get a clear error if it writes there

        # Configure the EntryScript singleton before the script can ask for it.
        config = dict((k, v) for k, v in message.items() if k not in ("type", "protocol"))
        parallel_run._configure(
            output_dir=output_dir,
            working_dir=working_dir,
            log_dir=message.get("log_dir"),
            agent_name=message.get("agent_name"),
            config=config,
        )
        _redirect_stdout(message.get("log_dir"), message.get("agent_name"))

        # Run.get_context().input_datasets: the side inputs by name (and the
        # named inputs stepgraph lists in STEPGRAPH_INPUT_DATASETS).
        azureml.core.run.configure(
            side_inputs=message.get("side_inputs"),
            agent_name=message.get("agent_name"),
        )

        module = import_entry_script(entry)
        self.module = module
        init = getattr(module, "init", None)
        if callable(init):
            init()
        run = getattr(module, "run", None)
        if not callable(run):
            self.module = None
            raise InitError(
                "entry script %s defines no run(mini_batch) function; a ParallelRunStep "
                "entry script needs init() (optional) and run(mini_batch)" % entry
            )
        self.run_func = run
        self.run_with_context = takes_context(run)

    # -- run ---------------------------------------------------------------

    def pandas(self):
        if not self._pd_loaded:
            self._pd = _pandas()
            self._pd_loaded = True
        return self._pd

    def build_mini_batch(self, message):
        kind = message.get("kind")
        if kind == "files":
            return [decode_path(p) for p in message.get("files") or []]
        if kind == "tabular":
            return read_tabular(
                message.get("segments") or [], self.pandas(), message.get("partitions")
            )
        raise ValueError("unknown mini-batch kind %r (expected files or tabular)" % kind)

    def handle_run(self, message):
        index = message["index"]
        try:
            mini_batch = self.build_mini_batch(message)
            if self.run_with_context:
                if message.get("kind") == "files":
                    dataset = MiniBatchFileDataset(mini_batch, message.get("partitions"), index)
                else:
                    dataset = MiniBatchTabularDataset(mini_batch, index)
                context = MiniBatchContext(
                    message.get("partition_key_value") or {}, index, dataset
                )
                result = self.run_func(mini_batch, context)
            else:
                result = self.run_func(mini_batch)
            frame, elements = normalise_result(result)
            reply = {
                "type": "result",
                "index": index,
                "count": len(frame) if frame is not None else len(elements),
            }
            if self.collect_rows:
                rows, columns = format_rows(frame, elements, self.row_format)
                reply["rows"] = rows
                if columns is not None:
                    reply["columns"] = columns
            line = Channel.encode(reply)
        except KeyboardInterrupt:
            raise
        except BaseException:
            # SystemExit too: one bad mini-batch must not take the worker down.
            text = _failure_text()
            sys.stderr.write("stepgraph worker: mini-batch %s failed:\n%s\n" % (index, text))
            sys.stderr.flush()
            self.channel.send({"type": "error", "index": index, "error": excerpt(text)})
            return
        if len(line) - 1 > self.max_line_bytes:
            self.channel.send({
                "type": "error",
                "index": index,
                "error": "the result of mini-batch %s is %d bytes, over the protocol's line "
                "limit of %d bytes; use a smaller mini_batch_size"
                % (index, len(line) - 1, self.max_line_bytes),
            })
            return
        self.channel.send_line(line)

    # -- shutdown ----------------------------------------------------------

    def call_shutdown(self):
        """Call the entry script's shutdown(), if any; errors are only logged."""
        if self.module is None:
            return
        shutdown = getattr(self.module, "shutdown", None)
        if not callable(shutdown):
            return
        try:
            shutdown()
        except KeyboardInterrupt:
            raise
        except BaseException:
            sys.stderr.write("stepgraph worker: shutdown() failed:\n%s\n" % traceback.format_exc())
        sys.stderr.flush()


def main():
    channel = open_channel()
    if HARNESS_DIR not in sys.path[:1]:
        sys.path.insert(0, HARNESS_DIR)
    worker = Worker(channel)
    try:
        return worker.serve()
    except KeyboardInterrupt:
        return 130
    except (BrokenPipeError, ConnectionResetError):
        # The engine went away while we were answering: nobody to tell,
        # so behave as on EOF.
        channel.discard_output()
        worker.call_shutdown()
        return EXIT_OK
    finally:
        try:
            sys.stderr.flush()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
