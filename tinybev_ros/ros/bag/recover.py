"""`tinybev bag recover`: turn what a killed writer left (a storage file without metadata.yaml) into a bag.

A recorder that is killed (SIGKILL, power loss) never writes metadata.yaml, so neither rosbags nor `ros2 bag`
can open what it left. The recorder flushes every second (atomic_writer.flush), so the storage file holds every
message up to the last flush: the committed rows of a .db3 (sqlite rolls the unfinished transaction back on
open), or the complete records of a .mcap up to where the file was cut (read with the `mcap` library, which
stops at the first truncated record). Those messages are streamed, in time order, into a new bag written through
AtomicBagWriter (never all in memory: a killed camera recording can be larger than it, and the next recording of
that target waits for the recovery); the types come from the shared type store, so the recovered bag carries the
same type hashes.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import pathname2url

log = logging.getLogger("tinybev.bag.recover")


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame's first bytes; a CDR message starts with 00 01 00 00


class RecoveryError(RuntimeError):
    """Nothing recoverable at the given path."""


@dataclass
class Salvage:
    """What could be read back: connections (topic -> type, offered QoS), and the messages in time order as a
    stream (a killed camera recording can be larger than memory)."""

    topics: dict[str, tuple[str, list]] = field(default_factory=dict)
    messages: Iterator[tuple[int, str, bytes]] = field(default_factory=lambda: iter(()))


def storage_file(path: Path) -> Path:
    """The .db3 / .mcap inside a bag folder, a staging folder (one level deeper), or the file itself."""
    compressed_hint = ": file-compressed (rosbag2 --compression-mode file), which recover does not undo"
    if path.is_file():
        if path.suffix not in (".db3", ".mcap"):
            raise RecoveryError(f"{path}: not a .db3 or .mcap storage file"
                                f"{compressed_hint if path.suffix == '.zstd' else ''}")
        return path
    found = sorted([*path.glob("*.db3"), *path.glob("*.mcap"), *path.glob("*/*.db3"), *path.glob("*/*.mcap")])
    if not found:
        compressed = [f.name for f in (*path.glob("*.zstd"), *path.glob("*/*.zstd"))]
        hint = f" ({', '.join(compressed)}{compressed_hint})" if compressed else ""
        raise RecoveryError(f"{path}: no .db3 or .mcap storage file to recover{hint}")
    if len(found) > 1:
        raise RecoveryError(f"{path}: several storage files ({', '.join(f.name for f in found)}); name one")
    return found[0]


def _read_sqlite(path: Path) -> Salvage:
    from rosbags.rosbag2.metadata import parse_qos

    uri = f"file:{pathname2url(str(path))}"
    salvage = Salvage()
    names = {}
    try:
        # Read-write on purpose: opening rolls back the transaction the killed writer left in its journal.
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            for topic_id, topic, msgtype, qos in conn.execute(
                    "SELECT id, name, type, offered_qos_profiles FROM topics"):
                names[topic_id] = topic
                salvage.topics[topic] = (msgtype, parse_qos(qos) if qos else [])
    except sqlite3.DatabaseError as exc:
        raise RecoveryError(f"{path}: not a readable rosbag2 sqlite3 file ({exc})") from exc

    def messages() -> Iterator[tuple[int, str, bytes]]:
        try:
            with closing(sqlite3.connect(uri, uri=True)) as conn:
                for topic_id, stamp, data in conn.execute(
                        "SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp, id"):
                    yield stamp, names[topic_id], bytes(data)
        except sqlite3.DatabaseError as exc:
            raise RecoveryError(f"{path}: its messages cannot be read ({exc})") from exc

    salvage.messages = messages()
    return salvage


def _mcap_records(path: Path) -> Iterator[object]:
    from mcap.exceptions import McapError
    from mcap.stream_reader import StreamReader

    with path.open("rb") as stream:
        try:
            yield from StreamReader(stream, skip_magic=False).records
        except (McapError, EOFError, ValueError) as exc:  # the cut: every complete record before it was yielded
            log.info("%s ends in an incomplete record (%s); keeping what came before it", path, exc)


def _read_mcap(path: Path) -> Salvage:
    """Two passes: connections and whether the messages are in time order (a recorder writes them as they
    arrive, so they are), then the messages streamed; only out-of-order ones are sorted in memory."""
    from mcap.records import Channel, Message, Schema
    from rosbags.rosbag2.metadata import parse_qos

    salvage = Salvage()
    schemas: dict[int, str] = {}
    channels: dict[int, str] = {}
    in_order, last = True, -1
    for record in _mcap_records(path):
        if isinstance(record, Schema):
            schemas[record.id] = record.name
        elif isinstance(record, Channel):
            qos = record.metadata.get("offered_qos_profiles", "")
            salvage.topics[record.topic] = (schemas[record.schema_id], parse_qos(qos) if qos else [])
            channels[record.id] = record.topic
        elif isinstance(record, Message):
            in_order, last = in_order and record.log_time >= last, record.log_time

    def messages() -> Iterator[tuple[int, str, bytes]]:
        for record in _mcap_records(path):
            if isinstance(record, Message):
                yield record.log_time, channels[record.channel_id], bytes(record.data)

    salvage.messages = messages() if in_order else iter(sorted(messages(), key=lambda m: m[0]))
    return salvage


def salvage(path: str | Path) -> Salvage:
    """Every message a killed writer left readable in the storage file under `path`."""
    storage = storage_file(Path(path))
    return _read_sqlite(storage) if storage.suffix == ".db3" else _read_mcap(storage)


def recover(source: str | Path, target: str | Path, force: bool = False) -> int:
    """Write the readable messages of `source` as a complete bag at `target`; returns how many were recovered."""
    from tinybev_ros.ros.bag.atomic_writer import AtomicBagWriter, remove_stale
    from tinybev_ros.ros.bag.typestore import build_typestore, ensure_msgtype

    storage = storage_file(Path(source))
    found = salvage(storage)
    if not found.topics:
        raise RecoveryError(f"{storage}: no topic was registered before the writer stopped; nothing to recover")
    store = build_typestore(extra_packages=())

    def remove_other_stale(staging: Path) -> None:  # the source may be the target's own stale staging folder
        if not storage.resolve().is_relative_to(staging.resolve()):
            remove_stale(staging)

    with AtomicBagWriter(target, "sqlite3" if storage.suffix == ".db3" else "mcap", force,
                         on_stale=remove_other_stale) as writer:
        connections = {}
        for topic, (msgtype, qos) in found.topics.items():
            ensure_msgtype(store, msgtype)
            connections[topic] = writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=qos)
        count = 0
        for stamp, topic, data in found.messages:
            if count == 0 and bytes(data[:4]) == ZSTD_MAGIC:  # copied as they are, they would pass for CDR
                raise RecoveryError(f"{storage}: its messages are zstd-compressed (rosbag2 --compression-mode "
                                    "message), which recover does not undo; `ros2 bag reindex` rebuilds the "
                                    "metadata of such a bag")
            writer.write(connections[topic], stamp, data)
            count += 1
    return count


def recover_stale_recording(staging: Path) -> None:
    """AtomicBagWriter's `on_stale` for the recorder: a killed recording becomes `<name>.recovered-<pid>`."""
    from tinybev_ros.ros.bag.atomic_writer import staging_owner

    name = staging.name[1:].split(".partial-", 1)[0]
    target = staging.parent / f"{name}.recovered-{staging_owner(staging) or 'unknown'}"
    while target.exists():  # never replace an earlier recovery
        target = target.with_name(target.name + "-again")
    try:
        count = recover(staging, target)
    except RecoveryError as exc:
        log.warning("removed %s, left by a killed recorder, with nothing to recover (%s)", staging, exc)
    else:
        log.warning("recovered %d messages of a killed recording into %s", count, target)
    shutil.rmtree(staging, ignore_errors=True)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path,
                        help="what a killed writer left: a .NAME.partial-* folder, a bag folder or a .db3/.mcap file")
    parser.add_argument("--out", type=Path, required=True, help="bag directory to write")
    parser.add_argument("--force", action="store_true", help="replace an existing bag at --out")


def run(args: argparse.Namespace) -> int:
    from tinybev_ros.ros.bag.atomic_writer import BagTargetError
    from tinybev_ros.ros.bag.typestore import MissingInterfaceError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        count = recover(args.source, args.out, args.force)
    except (RecoveryError, BagTargetError, MissingInterfaceError) as exc:
        print(f"bag recover: error: {exc}", file=sys.stderr)
        return 2
    print(f"bag recover: {count} messages written to {args.out}")
    return 0
