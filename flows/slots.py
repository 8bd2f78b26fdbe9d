"""Device slots for flow tasks: a Prefect global concurrency limit plus a local device lock.

Every task that runs a torch job holds one slot of the global concurrency limit named after
its device kind (``gpu``, or ``cpu`` on machines without a GPU) and runs on the device its
slot names::

    from flows.slots import device_slot

    with device_slot() as slot:  # "gpu" when torch sees a GPU, else "cpu"
        subprocess.run(cmd, env={**os.environ, **slot.env}, check=True)

Two layers, because they answer different questions:

* The **global limit** (Prefect ``GlobalConcurrencyLimit``) counts the fleet's devices across
  machines: with ``gpu`` at N slots, at most N GPU tasks run anywhere at once. It is created on
  first use (:func:`ensure_limit`) with as many slots as this host sees GPUs (or a count from
  params) and is acquired with ``strict=True``: a missing limit is an error, never a silent
  no-limit. An *inactive* limit is refused too, because Prefect 3.8.8 grants slots on an
  inactive limit without counting them (verified against the server: two holders of an
  inactive 1-slot limit both get in).
* The **local device lock** (``fcntl.flock`` on ``<lock_dir>/<kind>-<i>.lock``) says *which*
  device on this host the task gets, and guarantees that no two tasks on the host share it.
  The OS drops a flock when its process dies, so a killed process never orphans a device
  locally.

Leases (Prefect 3.8.8, read in ``prefect/concurrency/_leases.py`` and
``prefect/server/services/repossessor.py``):

* A slot is a lease of ``lease_duration`` seconds, renewed by a daemon thread
  (``concurrency-lease-renewal-<lease id>``) every ``0.75 * lease_duration`` seconds. The server
  refuses leases shorter than **60 s** (HTTP 422) or longer than a day; :func:`device_slot`
  checks that up front.
* A killed process stops renewing; its slot is freed by the server's *repossessor* service,
  which scans for expired leases every ``PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS``
  (default **15 s**). So an orphaned slot is released at most ``lease_duration + 15`` seconds
  after the last renewal (default lease here 120 s: within ~135 s). A waiter retries after the
  server's ``Retry-After``, capped by ``PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS``
  (default 30 s), which adds to that.
* The default server lease storage is in memory: a server restart forgets the leases while the
  counted slots stay in the database, so they are never repossessed. Production servers should
  set ``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=prefect.server.concurrency.lease_storage.filesystem``.
* A lost lease (renewal failed three times, e.g. the server was down or restarted) does not
  stop the task: ``raise_on_lease_renewal_failure=False``, because killing a healthy
  hour-long training run for a bookkeeping failure is worse than a temporary over-count.
  It is not silent either: this module logs a WARNING naming the lease (Prefect logs one too),
  and the local lock still keeps the device exclusive on this host.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ContextManager, Literal
from uuid import UUID

if TYPE_CHECKING:
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder

log = logging.getLogger(__name__)

SlotKind = Literal["gpu", "cpu"]
KINDS: tuple[SlotKind, ...] = ("gpu", "cpu")

#: Bounds the Prefect server puts on a lease (``/v2/concurrency_limits/increment-with-lease``).
MIN_LEASE_SECONDS = 60.0
MAX_LEASE_SECONDS = 24 * 60 * 60.0
#: Environment variable naming the folder of the local device locks.
LOCK_DIR_ENV = "TALKHEAD_SLOT_LOCKS"
# Prefect 3.8.8 names its renewal thread after the lease (prefect/concurrency/_leases.py).
_RENEWAL_THREAD_PREFIX = "concurrency-lease-renewal-"
# How often the lease watcher looks at that thread.
_WATCH_SECONDS = 0.25


class SlotError(RuntimeError):
    """A slot cannot be had safely (no local device of that kind, or an inactive limit)."""


@dataclass(frozen=True)
class Slot:
    """A held device slot.

    ``index`` is the local device (0-based among the devices this process sees); ``env`` is what a
    child process must get on top of ``os.environ`` to run on that device and nowhere else;
    ``lease_id`` is the Prefect lease behind the global slot (for logs; ``None`` if unknown).
    """

    kind: SlotKind
    index: int
    env: dict[str, str] = field(hash=False)
    lease_id: UUID | None = None


def visible_gpus() -> int:
    """Number of CUDA devices torch sees (``CUDA_VISIBLE_DEVICES`` honoured); 0 without CUDA."""
    import torch  # heavy; only needed when a slot is taken

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def slot_kind() -> SlotKind:
    """``"gpu"`` when this process sees a GPU, else ``"cpu"``: the same flows run on either."""
    return "gpu" if visible_gpus() > 0 else "cpu"


def default_slots(kind: SlotKind) -> int:
    """Slots a new limit of ``kind`` gets: one per visible GPU; one for ``cpu``.

    One CPU slot because our machines have two cores and one torch job already uses both;
    callers with bigger hosts pass their own count (from params).
    """
    _check_kind(kind)
    return visible_gpus() if kind == "gpu" else 1


def ensure_limit(name: str, slots: int) -> int:
    """Create the global concurrency limit ``name`` with ``slots`` slots unless it exists.

    An existing limit keeps its size (an operator may have resized it for the fleet; a task must
    not shrink or grow it behind their back). Another process creating it between our read and our
    create is fine. Returns the limit's current size. Raises ``ValueError`` for ``slots < 1`` and
    :class:`SlotError` for an inactive limit, on which Prefect would grant uncounted slots.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(f"concurrency limit {name!r} needs at least 1 slot, got {slots!r}")
    with get_client(sync_client=True) as client:
        try:
            existing = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=slots, active=True))
            except ObjectAlreadyExists:  # another process won the race; use its limit
                existing = client.read_global_concurrency_limit_by_name(name)
            else:
                log.info("created global concurrency limit %r with %d slot(s)", name, slots)
                return slots
    if not existing.active:
        raise SlotError(f"global concurrency limit {name!r} exists but is inactive: Prefect would grant "
                        f"slots without counting them; activate it (prefect gcl enable {name})")
    if existing.limit != slots:
        log.info("global concurrency limit %r exists with %d slot(s) (asked for %d; left as is)",
                 name, existing.limit, slots)
    else:
        log.info("global concurrency limit %r exists with %d slot(s)", name, existing.limit)
    return int(existing.limit)


@contextmanager
def device_slot(kind: SlotKind | None = None, *, slots: int | None = None, devices: int | None = None,
                limit: str | None = None, lease_duration: float = 120.0, lock_dir: Path | None = None,
                timeout_seconds: float | None = None, poll_seconds: float = 0.5) -> Iterator[Slot]:
    """Hold one slot of the global limit ``limit`` (default: ``kind``) and one local device.

    Args:
        kind: ``"gpu"`` or ``"cpu"``; default :func:`slot_kind`.
        slots: size of the global limit if it has to be created (default :func:`default_slots`);
            for ``cpu`` also the number of local CPU slots.
        devices: local device count, overriding :func:`visible_gpus` (``gpu``) or ``slots``
            (``cpu``). For tests and CPU machines that stand in for a GPU host.
        limit: name of the global concurrency limit; default ``kind``. Lock files are per kind, as
            they name physical devices.
        lease_duration: seconds a lease lasts between renewals, 60 s to one day (server bounds). A
            killed holder's slot comes back ``lease_duration`` + one repossessor loop after its last
            renewal, so shorter frees orphans sooner at the cost of more renewals.
        lock_dir: folder of the local lock files; default ``$TALKHEAD_SLOT_LOCKS`` or
            ``~/.cache/talkhead/slots``. Every process sharing the host's devices must use the same.
        timeout_seconds: give up (``TimeoutError``) when the global slot and the local device are not
            both held within this many seconds; ``None`` waits forever.
        poll_seconds: how often to retry the local locks while all are taken.

    Raises:
        prefect.concurrency.asyncio.ConcurrencySlotAcquisitionError: the limit is missing (strict).
        TimeoutError: ``timeout_seconds`` ran out.
        SlotError: no local device of ``kind``, or an inactive limit.
        ValueError: bad arguments.
    """
    from prefect.concurrency.context import ConcurrencyContext
    from prefect.concurrency.sync import concurrency

    kind = slot_kind() if kind is None else kind
    _check_kind(kind)
    if not MIN_LEASE_SECONDS <= lease_duration <= MAX_LEASE_SECONDS:
        raise ValueError(f"lease_duration must be within [{MIN_LEASE_SECONDS:g}, {MAX_LEASE_SECONDS:g}] s "
                         f"(the Prefect server's bounds), got {lease_duration!r}")
    if timeout_seconds is not None and timeout_seconds < 0:
        raise ValueError(f"timeout_seconds must be >= 0 or None, got {timeout_seconds!r}")
    n_slots = default_slots(kind) if slots is None else slots
    if devices is None:
        devices = visible_gpus() if kind == "gpu" else n_slots
    if devices < 1:
        raise SlotError(f"no local {kind} device to run on (devices={devices}); "
                        f"on a machine without a GPU use kind='cpu' (the default picks it)")
    name = limit or kind
    locks = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds

    ensure_limit(name, n_slots)
    # The local device first: a worker that took more runs than it has devices then waits without holding a
    # slot of the fleet, which another machine's idle device could use.
    with _local_device(kind, devices, locks, deadline, poll_seconds) as index:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        # Our own ConcurrencyContext records the lease id at acquisition (Prefect appends it there),
        # which is how we name the lease in logs; on exit it also releases a lease whose normal release
        # was interrupted.
        with ConcurrencyContext() as ctx:
            prefect_slot = concurrency(name, occupy=1, strict=True, lease_duration=lease_duration,
                                       raise_on_lease_renewal_failure=False, timeout_seconds=remaining,
                                       holder=_current_holder())
            with _ReleaseQuietly(prefect_slot, ctx, name, lease_duration) as lease_id:
                slot = Slot(kind=kind, index=index, env=device_env(kind, index), lease_id=lease_id)
                log.info("holding %s slot: limit %r, device %d, lease %s", kind, name, index, lease_id)
                try:
                    with _LeaseWatch(lease_id, name, kind, index):
                        yield slot
                finally:
                    log.info("releasing %s slot: limit %r, device %d, lease %s", kind, name, index, lease_id)


def device_env(kind: SlotKind, index: int) -> dict[str, str]:
    """Environment a child process needs to run on local device ``index`` of ``kind`` only.

    ``index`` counts the devices this process sees, so under a parent ``CUDA_VISIBLE_DEVICES=2,3``
    device 1 is ``"3"``; ``cpu`` hides every GPU (``""``).
    """
    _check_kind(kind)
    if kind == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return {"CUDA_VISIBLE_DEVICES": visible[index] if index < len(visible) else str(index)}


def default_lock_dir() -> Path:
    """``$TALKHEAD_SLOT_LOCKS`` or ``~/.cache/talkhead/slots``: one folder per host, shared by its users."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "talkhead" / "slots"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"slot kind must be one of {KINDS}, got {kind!r}")


def _lease_of(ctx: Any) -> UUID | None:
    ids = list(getattr(ctx, "cleanup_lease_ids", ()) or ())
    return ids[-1] if ids else None


def _current_holder() -> "ConcurrencyLeaseHolder | None":
    """The task run (or flow run) we are in, so the Prefect UI shows who holds the slot."""
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task_run is not None:
        return ConcurrencyLeaseHolder(type="task_run", id=task_ctx.task_run.id)
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        return ConcurrencyLeaseHolder(type="flow_run", id=flow_ctx.flow_run.id)
    return None


@contextmanager
def _local_device(kind: SlotKind, devices: int, lock_dir: Path, deadline: float | None,
                  poll_seconds: float) -> Iterator[int]:
    """Lock the first free ``<lock_dir>/<kind>-<i>.lock`` (i < devices), polling while all are taken.

    ``flock`` locks belong to the open file, so threads of one process exclude each other too, and
    the kernel drops them when the process dies. The descriptor is not inherited by children
    (Python's default), so a stray grandchild cannot keep a device locked after its task ended.
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    waiting_logged = False
    while True:
        for index in range(devices):
            path = lock_dir / f"{kind}-{index}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                continue
            try:
                os.ftruncate(fd, 0)  # who holds it, for whoever looks at the file
                os.write(fd, f"{os.getpid()}\n".encode())
                yield index
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"all {devices} local {kind} device(s) in {lock_dir} stayed taken")
        if not waiting_logged:
            log.info("all %d local %s device(s) in %s are taken; waiting", devices, kind, lock_dir)
            waiting_logged = True
        pause = poll_seconds if deadline is None else min(poll_seconds, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)


class _ReleaseQuietly:
    """Enter a Prefect slot (returning its lease id); on exit, a failed release is logged, not raised.

    A release fails when the server is unreachable; the lease then lapses on its own (the
    repossessor frees it ``lease_duration`` after the last renewal), and failing a task whose work
    is done would be worse. An exception of the body still propagates unchanged.
    """

    def __init__(self, inner: ContextManager[None], ctx: Any, name: str, lease_duration: float) -> None:
        self._inner, self._ctx, self._name, self._lease_duration = inner, ctx, name, lease_duration
        self._lease_id: UUID | None = None

    def __enter__(self) -> UUID | None:
        self._inner.__enter__()
        self._lease_id = _lease_of(self._ctx)
        return self._lease_id

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        try:
            return bool(self._inner.__exit__(exc_type, exc, tb))
        except Exception as release_exc:
            if release_exc is exc:
                raise
            log.warning("could not release the slot of limit %r (lease %s): %s; the server frees it when "
                        "the lease expires, within %g s plus one repossessor loop", self._name, self._lease_id,
                        release_exc, self._lease_duration, exc_info=release_exc)
            return False


class _LeaseWatch:
    """Warn when Prefect's renewal thread for our lease ends while we still hold the slot.

    That thread only ends early when renewal failed for good (``raise_on_lease_renewal_failure``
    is off, so Prefect logs a warning and lets us run on). We add which limit and device it was, and
    that the local lock still keeps the device exclusive on this host; only the fleet-wide count
    may be exceeded until the task ends.
    """

    def __init__(self, lease_id: UUID | None, name: str, kind: SlotKind, index: int) -> None:
        self._lease_id, self._name, self._kind, self._index = lease_id, name, kind, index
        self._done = threading.Event()
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> "_LeaseWatch":
        renewal = self._renewal_thread()
        if renewal is None:
            log.debug("no renewal thread found for lease %s; a lost lease is reported by Prefect only",
                      self._lease_id)
            return self
        self._watcher = threading.Thread(target=self._watch, args=(renewal,), daemon=True,
                                         name=f"talkhead-lease-watch-{self._lease_id}")
        self._watcher.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        # Set before Prefect stops its renewal thread (after we return), so a normal exit never
        # reads as a lost lease.
        if self._watcher is not None:
            self._watcher.join(timeout=2)

    def _renewal_thread(self) -> threading.Thread | None:
        if self._lease_id is None:
            return None
        wanted = f"{_RENEWAL_THREAD_PREFIX}{self._lease_id}"
        return next((t for t in threading.enumerate() if t.name == wanted), None)

    def _watch(self, renewal: threading.Thread) -> None:
        while not self._done.wait(_WATCH_SECONDS):
            if not renewal.is_alive():
                self.lease_lost()
                return

    def lease_lost(self) -> None:
        log.warning(
            "lost the Prefect lease %s on concurrency limit %r (renewal failed): the task goes on, and the "
            "global slot count may be exceeded until it ends; the local lock still guarantees that no "
            "other task on this host uses %s device %d", self._lease_id, self._name, self._kind, self._index)
