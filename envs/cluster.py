"""Where parallel work runs: local processes, or a Ray cluster (the optional ``[ray]`` extra).

``--cluster local`` (the default) keeps the local process pools. ``--cluster ray`` joins the
Ray cluster this machine belongs to (``ray start`` on it, or ``RAY_ADDRESS``), or starts a
one-machine Ray when there is none; any other value is a Ray address (``HOST:6379`` or
``ray://HOST:10001``). Workers on other nodes must see the same files at the same paths
(shared storage) and have the project installed. See ``docs/scaling.md``.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

LOCAL = "local"
RAY = "ray"
INSTALL_HINT = "pip install 'worldvae[ray]' (or pip install 'ray>=2.20')"
PROBE_TIMEOUT_S = 5.0  # a Ray head answers a TCP connect at once; ray.init would wait minutes


def check_cluster(cluster: str) -> str:
    """Return ``cluster`` if it names a place to run, else raise a ValueError naming the forms."""
    if not isinstance(cluster, str) or not cluster or cluster.strip() != cluster:
        raise ValueError(
            "--cluster takes 'local', 'ray' or a Ray address such as HOST:6379 or "
            f"ray://HOST:10001, got {cluster!r}"
        )
    return cluster


def uses_ray(cluster: str) -> bool:
    """True unless ``cluster`` is ``"local"``."""
    return check_cluster(cluster) != LOCAL


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError with the install command."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"--cluster ray needs Ray: {INSTALL_HINT}") from e
    return ray


def host_and_port(address: str, name: str = "--cluster") -> tuple[str, int] | None:
    """The ``(host, port)`` a Ray address names (``HOST:PORT``, ``ray://HOST:PORT``,
    ``[IPV6]:PORT``), or None for the addresses Ray resolves itself (``auto``, ``local``).

    Raises:
        ValueError: the address names no port (or a port out of range).
    """
    rest = address.removeprefix("ray://").rstrip("/")
    if rest in ("auto", "local"):
        return None
    if rest != address and not rest.rpartition("]")[2].count(":"):
        rest += ":10001"  # a Ray client address without a port: Ray's default
    host, sep, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{name} {address!r} names no host and port; give a Ray address such as HOST:6379 "
            "or ray://HOST:10001"
        )
    return host, int(port)


def probe_address(
    address: str, timeout_s: float = PROBE_TIMEOUT_S, name: str = "--cluster"
) -> None:
    """Fail fast when nothing answers at the Ray ``address`` (``ray.init`` would hang for
    minutes). A plain TCP connect, so it needs no Ray. ``name`` says where the address came
    from, for the messages.

    Raises:
        ValueError: the address names no port.
        ConnectionError: nothing accepts a connection there within ``timeout_s`` seconds (the
            message names the address and what to do).
    """
    target = host_and_port(address, name)
    if target is None:
        return
    host, port = target
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        timed_out = isinstance(e, TimeoutError)
        reason = f"no answer within {timeout_s:g} s" if timed_out else (e.strerror or str(e))
        where = address if name == "--cluster" else f"{name}={address}"
        raise ConnectionError(
            f"no Ray cluster answers at {where} ({reason}); start one there (ray start --head "
            f"--port {port}), check the address and firewall, or run with --cluster local"
        ) from None


def connect_ray(cluster: str) -> Any:
    """Join (or start) the Ray cluster named by ``cluster``; return the ``ray`` module.

    An already initialised Ray (a test fixture, a notebook) is used as it is. A named address
    (``--cluster HOST:PORT``, or ``RAY_ADDRESS`` under ``--cluster ray``) is probed first
    (:func:`probe_address`), so an address where nothing listens fails in seconds.

    Raises:
        ValueError: ``cluster`` is ``"local"`` or malformed.
        ConnectionError: nothing answers at the address.
        ImportError: Ray is not installed (the message gives the install command).
    """
    if not uses_ray(cluster):
        raise ValueError("connect_ray needs --cluster ray or a Ray address, got 'local'")
    loaded = sys.modules.get("ray")
    if loaded is not None and getattr(loaded, "is_initialized", lambda: False)():
        return loaded
    address = None if cluster == RAY else cluster
    if address is not None:
        probe_address(address)
    elif os.environ.get("RAY_ADDRESS"):  # where ray.init(address=None) would go
        probe_address(os.environ["RAY_ADDRESS"], name="RAY_ADDRESS")
    ray = import_ray()
    if ray.is_initialized():
        return ray
    logger.info("connecting to Ray at %s", address or "the local cluster (or a new one)")
    ray.init(address=address, log_to_driver=True)
    return ray


def cluster_cpus(ray: Any) -> int:
    """CPUs the cluster offers in all (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cancel_and_drain(ray: Any, refs: list[Any], timeout_s: float = 60.0) -> None:
    """Cancel running tasks and wait until each has finished, failed or been cancelled.

    Killing a task mid-write leaves at most a temporary file (every write is atomic); waiting
    here means no task writes after the caller has tidied up.
    """
    for ref in refs:
        ray.cancel(ref, force=True)
    if refs:  # a cancelled task's reference becomes ready (holding the cancellation error)
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)


def run_tasks(
    ray: Any,
    remote: Any,
    items: Iterator[Any],
    args_of: Callable[[Any], tuple[Any, ...]],
    limit: int,
    on_result: Callable[[Any, Any], bool],
    describe: Callable[[Any], str] = str,
) -> None:
    """Run ``remote(*args_of(item))`` for the items, at most ``limit`` at once, as they finish.

    ``on_result(item, value)`` is called on the driver as each task finishes; it returns False
    to stop handing out items (the budget is met). ``describe(item)`` names an item in an
    error message. Tasks still running when this returns
    (budget met, or an error) are cancelled and waited for.

    Raises:
        RuntimeError: a task failed (after Ray's retries); the message names its item.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    in_flight: dict[Any, Any] = {}

    def hand_out() -> None:
        item = next(items, None)
        if item is not None:
            in_flight[remote.remote(*args_of(item))] = item

    try:
        for _ in range(limit):
            hand_out()
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            item = in_flight.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except Exception as e:
                cause = getattr(e, "cause", None) or e  # a RayTaskError wraps the task's own
                raise RuntimeError(
                    f"{describe(item)} failed on the Ray cluster: {type(cause).__name__}: {cause}"
                ) from e
            if not on_result(item, value):
                break
            hand_out()
    finally:
        cancel_and_drain(ray, list(in_flight))
