"""`RayDetector` on a real local Ray cluster (2 CPUs): a Serve deployment of 2 replicas of the
real COCO model, called as the server calls it (JPEG bytes, per-call params, from many threads)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import numpy as np
import psutil
import pytest

pytest.importorskip("ray.serve", reason="needs espdetect[ray]")

from ray import serve

from espdetect.detectors.base import DetectParams
from espdetect.detectors.onnx import OnnxDetector
from espdetect.exceptions import ConfigurationError, DecodeError, DetectorError
from espdetect.ray import RayDetector, RayOptions
from tests._ray import RayCluster
from tests.server.conftest import wait_until

APP = "espdetect-lib-test"


@pytest.fixture(scope="module")
def pool(ray_cluster: RayCluster, model_path: str) -> Iterator[RayDetector]:
    detector = RayDetector(model_path, options=RayOptions(address=ray_cluster.address, app=APP, replicas=2))
    yield detector
    # The pool outlives its users by design; the next tests need the cluster's CPUs back.
    serve.delete(APP)
    detector.close()


@pytest.fixture(scope="module")
def local(model_path: str) -> Iterator[OnnxDetector]:
    detector = OnnxDetector(model_path, threads=1)
    yield detector
    detector.close()


@pytest.fixture(scope="module")
def photos(sample_images: dict[str, object]) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in sample_images.items()}  # type: ignore[attr-defined]


def _same(a: object, b: object) -> None:
    from espdetect.detections import Detections

    assert isinstance(a, Detections) and isinstance(b, Detections)
    assert a.class_id.tolist() == b.class_id.tolist()
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=0.5)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-3)


@pytest.mark.parametrize("reduce", [1, 2])
def test_boxes_equal_the_local_model(
    pool: RayDetector, local: OnnxDetector, photos: dict[str, bytes], reduce: int
) -> None:
    for jpeg in photos.values():
        _same(pool.detect_jpeg(jpeg, reduce=reduce), local.detect_jpeg(jpeg, reduce=reduce))  # type: ignore[arg-type]
    assert pool.info.remote and pool.info.backend == "ray"
    assert pool.names == local.names


def test_each_call_carries_its_own_params(
    pool: RayDetector, local: OnnxDetector, photos: dict[str, bytes]
) -> None:
    strict = DetectParams(conf=0.8, classes=[0])
    got = pool.detect_jpeg(photos["bus"], strict)
    assert len(got) > 0 and set(got.class_id.tolist()) == {0} and (got.confidence >= 0.8).all()
    _same(got, local.detect_jpeg(photos["bus"], strict))
    # The same pool, the next call with the detector's defaults: more boxes, not only people.
    assert set(pool.detect_jpeg(photos["bus"]).labels) >= {"person", "bus"}


def test_arrays_are_sent_as_images(
    pool: RayDetector, local: OnnxDetector, sample_images: dict[str, object]
) -> None:
    from espdetect.images import read_image

    image = read_image(sample_images["zidane"])  # type: ignore[arg-type]
    _same(pool.detect(image), local.detect(image))


def test_contending_callers_are_batched(pool: RayDetector, photos: dict[str, bytes]) -> None:
    before = pool.remote_state().calls
    errors: list[BaseException] = []

    def camera() -> None:
        try:
            for _ in range(8):
                pool.detect_jpeg(photos["bus"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=camera) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    state = pool.remote_state()
    assert state.calls == before + 32 and state.failures == 0 and state.healthy
    assert state.mean_batch_size is not None and state.mean_batch_size > 1.0
    assert state.replicas_running == 2
    assert state.round_trip_ms.p50 is not None and state.remote_ms.p50 is not None
    assert state.round_trip_ms.p50 >= state.remote_ms.p50


def test_a_corrupt_jpeg_fails_alone(pool: RayDetector, photos: dict[str, bytes]) -> None:
    with pytest.raises(DecodeError):
        pool.detect_jpeg(b"\xff\xd8not a jpeg\xff\xd9")
    assert pool.remote_state().healthy
    assert len(pool.detect_jpeg(photos["zidane"])) > 0


def test_a_second_detector_joins_the_same_pool(
    ray_cluster: RayCluster, pool: RayDetector, model_path: str, photos: dict[str, bytes]
) -> None:
    # Asking for 1 replica does not redeploy: the application that runs is shared as it is.
    joined = RayDetector(model_path, options=RayOptions(address=ray_cluster.address, app=APP, replicas=1))
    try:
        _same(joined.detect_jpeg(photos["bus"]), pool.detect_jpeg(photos["bus"]))
        wait_until(lambda: joined.remote_state().replicas_running == 2, what="the joined pool's replicas")
    finally:
        joined.close()
    assert pool.remote_state().healthy  # closing one user leaves the pool and the connection


def test_another_model_under_the_same_name_is_refused(ray_cluster: RayCluster, pool: RayDetector) -> None:
    with pytest.raises(ConfigurationError) as err:
        RayDetector("other.onnx", options=RayOptions(address=ray_cluster.address, app=APP))
    assert err.value.field == "ray_app" and "other.onnx" in str(err.value)


def test_a_call_past_its_timeout_degrades_then_recovers(
    ray_cluster: RayCluster, model_path: str, photos: dict[str, bytes]
) -> None:
    impatient = RayDetector(
        model_path, options=RayOptions(address=ray_cluster.address, app=APP, timeout=0.001)
    )
    try:
        with pytest.raises(DetectorError, match="no answer within"):
            impatient.detect_jpeg(photos["bus"])
        state = impatient.remote_state()
        assert not state.healthy and state.timeouts == 1 and "no answer within" in (state.reason or "")
        impatient.options = RayOptions(address=ray_cluster.address, app=APP, timeout=30.0)
        assert len(impatient.detect_jpeg(photos["bus"])) > 0
        assert impatient.remote_state().healthy
    finally:
        impatient.close()


def _replica_pids(app: str) -> list[int]:
    marker = f"ServeReplica:{app}:detector"
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline:
            pids.append(proc.pid)
    return pids


def test_a_killed_replica_is_replaced_and_calls_go_on(pool: RayDetector, photos: dict[str, bytes]) -> None:
    pids = _replica_pids(APP)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    answered = failed = 0

    # Calls go on: those routed to the dead replica fail (DetectorError, as any model failure),
    # the others answer, and Serve starts a replacement.
    def replaced() -> bool:
        nonlocal answered, failed
        try:
            pool.detect_jpeg(photos["bus"])
            answered += 1
        except DetectorError:
            failed += 1
        now = _replica_pids(APP)
        return len(now) == 2 and pids[0] not in now and pool.remote_state().replicas_running == 2

    wait_until(replaced, timeout=120.0, what="a replacement replica")
    assert answered > 0
    assert pool.remote_state().healthy or len(pool.detect_jpeg(photos["bus"])) > 0
