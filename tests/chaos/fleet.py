"""The consumer processes of one fault run: slots that behave like pods (started, killed, paused,
stopped with SIGTERM, restarted by a kubelet when their liveness fails)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from harness.process import ConsumerProcess

STOP_LIMIT_S = 30.0  # SIGTERM must end the process, exit 0, within Kubernetes' grace period


@dataclass
class Incarnation:
    slot: str
    process: ConsumerProcess
    started: float
    ended: str = ""  # "", "killed", "stopped rc=0 in 1.2s", "exited rc=1 by itself"
    terminated: float = 0.0  # monotonic time of SIGTERM
    exited: float = 0.0  # monotonic time of the exit after SIGTERM
    watcher: threading.Thread | None = None
    stable_id: bool = True
    env: dict[str, str] = field(default_factory=dict)


LIVENESS_EVERY_S = 2.0


class Fleet:
    """Consumer processes of one group; each slot is a 'pod' that may be restarted."""

    def __init__(self, env: dict[str, str], log_dir: Path, note: Callable[[str], None]) -> None:
        self.env = env
        self.log_dir = log_dir
        self.note = note
        self.slots: dict[str, Incarnation] = {}
        self.history: list[Incarnation] = []
        self.unexpected_exits: list[str] = []
        self.stops: list[tuple[str, int | None, float]] = []  # (slot, rc, seconds)
        self.liveness_restarts: list[str] = []
        self.last_kill = 0.0  # monotonic time of the last kill -9 (its transaction may be open)
        self._liveness_checked = 0.0

    def start(
        self, slot: str, stable_id: bool = True, wait: bool = True, env: Mapping[str, str] | None = None
    ) -> ConsumerProcess:
        """Start a consumer in ``slot``. ``stable_id``: the slot keeps its transactional.id across
        restarts (a restarted container of the same pod, which fences its own zombie at once);
        otherwise the default per-process id (a new pod: the zombie's transaction times out).
        ``env``: settings of this slot's own (kept when the kubelet restarts it)."""
        self.check()
        if slot in self.slots:
            raise RuntimeError(f"slot {slot} is running")
        own = dict(env or {})
        merged = {**self.env, **own}
        if stable_id:
            merged["LEADS_TRANSACTIONAL_ID"] = f"{merged['LEADS_CONSUMER_GROUP']}-{slot}"
        count = sum(1 for inc in self.history if inc.slot == slot)
        process = ConsumerProcess(merged, self.log_dir / f"{slot}-{count}.log", clean=True)
        process.start(wait_ready=False)
        incarnation = Incarnation(slot, process, time.monotonic(), stable_id=stable_id, env=own)
        self.slots[slot] = incarnation
        self.history.append(incarnation)
        if wait:
            self.wait_assigned(slot)
        return process

    def wait_assigned(self, slot: str, timeout_s: float = 90.0) -> bool:
        """Until the consumer owns partitions (readiness is ignored: Redis may be down on purpose)."""
        process = self.slots[slot].process
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert process.proc is not None
            if process.proc.poll() is not None:
                self.check()
                return False
            try:
                if process.metric("leads_assigned_partitions") > 0:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        self.note(f"{slot} had no partitions {timeout_s:.0f}s after start")
        return False

    # Faults aimed at a slot whose consumer already exited by itself do nothing: check() has
    # recorded that exit as a violation, and the scenario goes on (it restarts the slot later).

    def kill(self, slot: str) -> None:
        self.check()
        incarnation = self.slots.pop(slot, None)
        if incarnation is not None:
            incarnation.process.kill()
            incarnation.ended = "killed"
            self.last_kill = time.monotonic()

    def pause(self, slot: str, seconds: float, meanwhile: Callable[[], object] | None = None) -> None:
        """SIGSTOP for ``seconds`` then SIGCONT (CPU throttling, a long GC pause): the input piles
        up, and the consumer then works through full batches back to back. ``meanwhile`` runs
        right after the SIGSTOP."""
        self.check()
        if slot not in self.slots:
            return
        proc = self.slots[slot].process.proc
        assert proc is not None
        started = time.monotonic()
        proc.send_signal(signal.SIGSTOP)
        try:
            if meanwhile is not None:
                meanwhile()
            time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        finally:
            proc.send_signal(signal.SIGCONT)

    def terminate(self, slot: str) -> Incarnation | None:
        """Send SIGTERM and return at once; ``reap`` waits for the exit."""
        self.check()
        incarnation = self.slots.pop(slot, None)
        if incarnation is None:
            return None
        assert incarnation.process.proc is not None
        proc = incarnation.process.proc
        incarnation.terminated = time.monotonic()
        proc.send_signal(signal.SIGTERM)

        def watch() -> None:  # the exit moment, however late reap() looks
            try:
                proc.wait(STOP_LIMIT_S + 15)
                incarnation.exited = time.monotonic()
            except subprocess.TimeoutExpired:
                pass

        incarnation.watcher = threading.Thread(target=watch, daemon=True)
        incarnation.watcher.start()
        return incarnation

    def reap(self, incarnation: Incarnation) -> tuple[int | None, float]:
        process = incarnation.process
        assert process.proc is not None and incarnation.watcher is not None
        incarnation.watcher.join()
        rc = process.proc.poll()  # None: it did not stop in time
        seconds = (incarnation.exited or time.monotonic()) - incarnation.terminated
        process.kill()  # closes the log (a no-op kill once it exited)
        incarnation.ended = f"stopped rc={rc} in {seconds:.1f}s"
        self.stops.append((incarnation.slot, rc, seconds))
        return rc, seconds

    def stop(self, slot: str) -> tuple[int | None, float]:
        """SIGTERM, as Kubernetes does, and wait: exit code and seconds taken."""
        incarnation = self.terminate(slot)
        return self.reap(incarnation) if incarnation is not None else (None, 0.0)

    def alive(self) -> list[str]:
        self.check()
        return list(self.slots)

    def check_liveness(self) -> None:
        """What the kubelet does: a consumer whose /healthz fails (its run loop stalled) is killed
        and started again. Reported as a note: recovering this way is by design, but it is worth
        seeing (a stall means the consumer stopped working for minutes)."""
        now = time.monotonic()
        if now - self._liveness_checked < LIVENESS_EVERY_S:
            return
        self._liveness_checked = now
        for slot, incarnation in list(self.slots.items()):
            try:
                status, body = incarnation.process.get("/healthz")
            except OSError:
                continue
            if status != 503:
                continue
            del self.slots[slot]
            if os.environ.get("CHAOS_STACKS"):  # with faulthandler registered on SIGUSR1 (debugging)
                assert incarnation.process.proc is not None
                incarnation.process.proc.send_signal(signal.SIGUSR1)
                time.sleep(1)
            incarnation.process.kill()
            incarnation.ended = "killed: liveness failed"
            self.last_kill = time.monotonic()
            self.liveness_restarts.append(slot)
            self.note(
                f"{slot}: /healthz failed ({body.strip()}): killed and started again, as the kubelet would"
            )
            self.start(slot, stable_id=incarnation.stable_id, wait=False, env=incarnation.env)

    def check(self) -> None:
        """A consumer that exits without being told to is a bug: record it (with its log tail)."""
        for slot, incarnation in list(self.slots.items()):
            proc = incarnation.process.proc
            if proc is not None and proc.poll() is not None:
                del self.slots[slot]
                incarnation.ended = f"exited rc={proc.returncode} by itself"
                tail = incarnation.process.logs()[-1500:]
                self.unexpected_exits.append(f"{slot} exited with {proc.returncode}:\n{tail}")

    def stop_all(self) -> None:
        for slot in list(self.slots):
            self.stop(slot)

    def kill_all(self) -> None:
        for slot in list(self.slots):
            self.kill(slot)
