"""Claims on images (``wsss.steps.image_claims``): one holder per image, with real processes
racing for them, a SIGKILLed holder's claims taken over, a silent holder on another machine
timed out, and half-written files of a live holder left alone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from wsss.steps.image_claims import CLAIMS, Claimant, ImageClaims, describe_holder, live_claims
from wsss.steps.label_plan import remove_stale_temporaries

ROOT = Path(__file__).resolve().parents[1]

HOLD = """\
import json, sys, time
from wsss.steps.image_claims import Claimant, ImageClaims
out, start, ids = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
with ImageClaims(out, Claimant(run=sys.argv[4], worker="tcp://127.0.0.1:1")) as claims:
    time.sleep(max(0.0, start - time.time()))
    print(json.dumps(claims.take(ids).got), flush=True)
    time.sleep(float(sys.argv[5]))
"""


def _holders(out: Path, ids: list[str], names: list[str], hold_s: float, start_in: float = 3.0) -> list[subprocess.Popen]:
    start = time.time() + start_in
    return [subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(start), ",".join(ids), name, str(hold_s)],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True) for name in names]


def test_processes_racing_for_the_same_images_each_get_a_disjoint_share(tmp_path):
    ids = [f"img{i:04d}" for i in range(300)]
    racers = _holders(tmp_path, ids, ["r1", "r2", "r3", "r4"], hold_s=2.0)
    try:
        got = [json.loads(racer.stdout.readline()) for racer in racers]
    finally:
        for racer in racers:
            racer.wait(timeout=60)
    claimed = [image_id for share in got for image_id in share]
    assert sorted(claimed) == ids  # every image held by exactly one of them
    assert not list((tmp_path / CLAIMS).iterdir())  # all released at the end


def test_a_killed_holders_claims_are_taken_over_and_say_who_held_them(tmp_path):
    holder = _holders(tmp_path, ["a", "b"], ["flow run 'killed'"], hold_s=120, start_in=0)[0]
    try:
        assert json.loads(holder.stdout.readline()) == ["a", "b"]
        with ImageClaims(tmp_path, Claimant(run="flow run 'second'")) as claims:
            taken = claims.take(["a", "c"])
            assert taken.got == ["c"] and taken.busy["a"]["pid"] == holder.pid
            assert describe_holder(taken.busy["a"]).startswith(
                f"flow run 'killed', worker tcp://127.0.0.1:1, process {holder.pid} on host {socket.gethostname()}")
            holder.kill()
            holder.wait()
            taken = claims.take(["a", "b"])
            assert taken.got == ["a", "b"] and set(taken.stale) == {"a", "b"}
            assert taken.stale["a"]["run"] == "flow run 'killed'" and taken.stale["a"]["pid"] == holder.pid
        assert not list((tmp_path / CLAIMS).iterdir())  # the dead holder's file went with its claims
    finally:
        holder.kill()
        holder.wait()


def _claim_from_elsewhere(out: Path, image_id: str, age_s: float) -> None:
    """A claim on ``image_id`` as a holder on another machine leaves it, its heartbeat ``age_s`` old."""
    before = set((out / CLAIMS).glob("*.claim"))
    with ImageClaims(out, Claimant(run="flow run 'remote'")) as writer:
        writer.take([image_id])
        (path,) = set((out / CLAIMS).glob("*.claim")) - before
        record = {**writer.record, "host": "another-machine", "machine": "other", "pid": 1}
        os.unlink(path)
        path.write_text(json.dumps(record))
        writer._held.clear()  # the file now stands for the other machine's holder
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))


def test_a_claim_of_another_machine_lives_as_long_as_its_heartbeat(tmp_path):
    _claim_from_elsewhere(tmp_path, "x", age_s=5)
    with ImageClaims(tmp_path, Claimant(run="here"), timeout_s=60) as claims:
        assert list(claims.take(["x"]).busy) == ["x"]  # pid 1 is alive here, but it is not this machine's
    _claim_from_elsewhere(tmp_path, "y", age_s=90)
    with ImageClaims(tmp_path, Claimant(run="here"), timeout_s=60) as claims:
        taken = claims.take(["y"])
        assert taken.got == ["y"] and taken.stale["y"]["host"] == "another-machine"


def test_half_written_files_of_a_live_holder_are_left_alone(tmp_path):
    (tmp_path / ".live.abcd1234.png").write_bytes(b"being written")
    (tmp_path / ".dead.abcd1234.png").write_bytes(b"left by a killed run")
    holder = _holders(tmp_path, ["live"], ["flow run 'writing'"], hold_s=120, start_in=0)[0]
    try:
        assert json.loads(holder.stdout.readline()) == ["live"]
        assert remove_stale_temporaries(tmp_path) == 1
        assert sorted(p.name for p in tmp_path.glob(".*.png")) == [".live.abcd1234.png"]
        with ImageClaims(tmp_path) as checker:
            assert list(live_claims(tmp_path, ["live", "dead"], checker)) == ["live"]
    finally:
        holder.kill()
        holder.wait()
    assert remove_stale_temporaries(tmp_path) == 1  # its holder is gone now


def test_the_file_of_a_killed_holder_without_claims_is_swept(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom wsss.steps.image_claims import ImageClaims\n"
                               "with ImageClaims(sys.argv[1]):\n    print('open', flush=True); time.sleep(120)",
                               str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with ImageClaims(tmp_path):
            assert len(list((tmp_path / CLAIMS).glob("*.holder"))) == 2  # alive: kept
        holder.kill()
        holder.wait()
        with ImageClaims(tmp_path) as claims:
            assert list((tmp_path / CLAIMS).glob("*.holder")) == [claims.holder]
    finally:
        holder.kill()
        holder.wait()
